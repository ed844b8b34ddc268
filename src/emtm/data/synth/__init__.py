"""The built-in synthetic grounding benchmark, and synthetic features for real annotations.

A real grounding problem with known ground truth, small enough to train on a CPU, written in
Charades-STA format so that it goes through the same readers as real data.

Videos are scripts. A video (12-60 s, mean ~31 s, one feature per second) holds 3-6
non-overlapping events (action, object, start, end; ~8 s on average) separated by background
stretches; a video's (action, object) pairs are unique, so each query names exactly one event.
The written moment is the event's span with annotation noise on each boundary
(`boundary_jitter`), as annotators disagree on real data. Events are
often *distractors* of each other: they share the object ("opens the door" / "closes the door")
or the action ("opens the door" / "opens the box"), so a model must match the combination.
Actions only take objects that afford them ("turn on" a light, "eat" a sandwich ...).

Clip features (T, D) are a sum of:

- background: a per-video scene vector plus a few "scene objects" (object prototypes of things
  that stand in the room at low strength all video long, often the objects that are used in it),
  plus a slowly varying AR(1) drift;
- each event, weighted by a trapezoid with soft ramps of ~1-2 s at both ends and a random
  amplitude: its action phase (phase A fading into phase B around the middle of the event),
  its object prototype (the whole event), and a small (action, object)-specific vector;
  each event perturbs its prototypes a little (no two "open the door" look identical);
- Gaussian noise; then the whole video is scaled by a random gain (norms are no shortcut).

That is the default `feature_style="gaussian"`: signed, zero-mean values whose clips are nearly
orthogonal (cosine ~0.05). Real clip features are not like that: I3D's are non-negative (post-ReLU
averages), a few values exactly 0, and every clip shares a large positive mean profile (any two clips
at cosine ~0.6-0.9; ../shared/data/real-features/stats.json). `feature_style="i3d"` (presets
`small-hard-i3d`, `hard-i3d`, or `--set feature_style=i3d`) renders the same videos with the same draws
and maps each value through `to_i3d_style`, which matches those statistics within the tolerances of
tests/test_synth_i3d.py (`emtm data stats --features F` prints them beside the real I3D rgb ones).

Actions are ordered pairs of phase prototypes. Reverse actions (open/close, pick up/put down,
turn on/turn off, walk to/walk away from ...) use the same two phases in the opposite order, so
telling them apart needs temporal context: a pooled feature cannot. Prototypes are random unit
vectors that share a common direction (`prototype_similarity`), seeded by the config's seed.

Difficulty (default knobs, measured once on an H200): a VSLNet-like span model (GRU encoders,
context-query attention, conditioned start/end heads, d=128, 8 epochs) reaches R1@0.5 ~65,
R1@0.7 ~42, mIoU ~55 on "default" (R1@0.5 ~33 on "small"); a mean-pooling regressor stays at
R1@0.5 ~17-20, mIoU ~24 on both, about the moment prior. Raise `noise_std` / `instance_std` for harder
(`emtm synth --set noise_std=0.7`, `with_overrides`).

Sentences are drawn from templates ("a person opens the door.", "someone is opening a door.",
"the man goes over and opens up the door." ...) with several verbs per action and 1-2 names
per object. Every word is in GloVe 6B (checked by the tests).

`synthesize_features_for_annotations` keeps real annotations (real sentences, real temporal
statistics) and makes features for them: each annotated moment adds, over its span and with the
same ramps, background and noise, the normalised sum over its content words of a fixed random
projection of the word's GloVe vector (related words give related features) plus a per-word
hashed random vector (distinct words are distinguishable). Other moments of the same video are
natural distractors.

The package, by part (every name below is importable from `emtm.data.synth` itself):

- `grammar`: the action and object tables, compatible pairs, sentence templates, `query_kind`;
- `config`: `SynthConfig`, `PRESETS`, `with_overrides`, `preset_name`, `check_both_splits`;
- `scripts`: video scripts (events, durations, queries) and `script_samples`;
- `rendering`: prototypes and the feature renderers of both feature styles;
- `write`: `generate`, which writes a benchmark (annotations, durations, features, data.yaml);
- `annotated`: `synthesize_features_for_annotations` and its `SentenceEncoder`.
"""

from emtm.data.synth.annotated import (
    MAX_VIDEO_LEN,
    STOP_WORDS,
    SentenceEncoder,
    split_from_filename,
    synthesize_features_for_annotations,
)
from emtm.data.synth.config import (
    FEATURE_STYLES,
    PRESETS,
    C,
    PixelLike,
    SynthConfig,
    check_both_splits,
    preset_name,
    with_overrides,
)
from emtm.data.synth.grammar import (
    ACTIONS,
    ADVERBS,
    OBJECTS,
    ORDINALS,
    PRE_ADVERBS,
    QUERY_KINDS,
    SUBJECTS,
    TEMPLATES,
    Action,
    Object,
    Verb,
    compatible_pairs,
    make_sentence,
    query_kind,
    verb_phrases,
    vocabulary_words,
)
from emtm.data.synth.rendering import (
    Layer,
    Prototypes,
    i3d_mean_profile,
    make_prototypes,
    render,
    render_video,
    to_i3d_style,
)
from emtm.data.synth.scripts import (
    Event,
    PairTable,
    Query,
    VideoScript,
    disambiguate,
    make_scripts,
    script_samples,
)
from emtm.data.synth.write import FEATURE_FORMATS, PathLike, generate

__all__ = [
    "ACTIONS", "ADVERBS", "C", "FEATURE_FORMATS", "FEATURE_STYLES", "MAX_VIDEO_LEN", "OBJECTS", "ORDINALS",
    "PRESETS", "PRE_ADVERBS", "QUERY_KINDS", "STOP_WORDS", "SUBJECTS", "TEMPLATES", "Action", "Event",
    "Layer", "Object", "PairTable", "PathLike", "PixelLike", "Prototypes", "Query", "SentenceEncoder",
    "SynthConfig", "Verb", "VideoScript", "check_both_splits", "compatible_pairs", "disambiguate",
    "generate", "i3d_mean_profile", "make_prototypes", "make_scripts", "make_sentence", "preset_name",
    "query_kind", "render", "render_video", "script_samples", "split_from_filename",
    "synthesize_features_for_annotations", "to_i3d_style", "verb_phrases", "vocabulary_words",
    "with_overrides",
]  # fmt: skip
