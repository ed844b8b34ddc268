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
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import islice
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import yaml

from emtm.data.annotations import read_annotations, write_charades_sta, write_durations
from emtm.data.features import write_h5, write_npy_dir
from emtm.data.records import Sample
from emtm.data.text import load_word_vectors, tokenize
from emtm.errors import ConfigError, DataError
from emtm.io import atomic_open

PathLike = str | os.PathLike[str]
C = TypeVar("C")
FEATURE_FORMATS = ("npy", "h5")
FEATURE_STYLES = ("gaussian", "i3d")
MAX_VIDEO_LEN = {"charades_sta": 64, "activitynet": 100, "tacos": 256, "jsonl": 128}
_CHUNK = 256  # videos per write_npy_dir call: memory stays small


# --------------------------------------------------------------------------------------------
# Vocabulary tables: actions (with their verbs) and objects (with their names)


@dataclass(frozen=True)
class Verb:
    """One way to say an action: base, 3rd person, -ing and past forms, and a particle.

    A separable particle may also follow the object ("turns the light on").
    """

    base: str
    s: str
    ing: str
    past: str
    particle: str = ""
    separable: bool = False


@dataclass(frozen=True)
class Action:
    name: str
    verbs: tuple[Verb, ...]
    tag: str  # the affordance an object needs; "any" fits every object
    reverse_of: str | None = None  # same two phases, in the opposite order


@dataclass(frozen=True)
class Object:
    names: tuple[str, ...]
    tags: frozenset[str]
    countable: bool = True  # False: plural or mass noun, no "a"


# name | object tag | reverse of | verbs: "base s ing past +particle", "*" = separable particle
_ACTION_TABLE = """
open           | open  |             | open opens opening opened; open opens opening opened +up
close          | open  | open        | close closes closing closed; shut shuts shutting shut
pick up        | carry |             | pick picks picking picked +up*; grab grabs grabbing grabbed
put down       | carry | pick up     | put puts putting put +down*; set sets setting set +down*
turn on        | power |             | turn turns turning turned +on*; switch switches switching switched +on*
turn off       | power | turn on     | turn turns turning turned +off*;
                                       switch switches switching switched +off*
walk to        | any   |             | walk walks walking walked +to; walk walks walking walked +over to;
                                       go goes going went +to
walk away from | any   | walk to     | walk walks walking walked +away from;
                                       move moves moving moved +away from
sit down on    | seat  |             | sit sits sitting sat +down on; sit sits sitting sat +on;
                                       take takes taking took +a seat on
stand up from  | seat  | sit down on | stand stands standing stood +up from; get gets getting got +up from
put on         | wear  |             | put puts putting put +on*; slip slips slipping slipped +on*
take off       | wear  | put on      | take takes taking took +off*; remove removes removing removed
take out       | carry |             | take takes taking took +out*; pull pulls pulling pulled +out*
put away       | carry | take out    | put puts putting put +away*; store stores storing stored
look at        | any   |             | look looks looking looked +at; stare stares staring stared +at;
                                       watch watches watching watched
hold           | carry |             | hold holds holding held; hold holds holding held +onto
eat            | food  |             | eat eats eating ate; take takes taking took +a bite of
drink from     | drink |             | drink drinks drinking drank +from; sip sips sipping sipped +from
wash           | clean |             | wash washes washing washed; clean cleans cleaning cleaned;
                                       rinse rinses rinsing rinsed
fold           | fold  |             | fold folds folding folded; fold folds folding folded +up*
unfold         | fold  | fold        | unfold unfolds unfolding unfolded;
                                       spread spreads spreading spread +out*
throw          | carry |             | throw throws throwing threw; toss tosses tossing tossed
read           | read  |             | read reads reading read; look looks looking looked +through
play with      | play  |             | play plays playing played +with; fiddle fiddles fiddling fiddled +with
lie down on    | rest  |             | lie lies lying lay +down on; lie lies lying lay +on
fill           | fill  |             | fill fills filling filled; fill fills filling filled +up*
empty          | fill  | fill        | empty empties emptying emptied; empty empties emptying emptied +out*
plug in        | plug  |             | plug plugs plugging plugged +in*
unplug         | plug  | plug in     | unplug unplugs unplugging unplugged;
                                       disconnect disconnects disconnecting disconnected
wipe           | clean |             | wipe wipes wiping wiped; dust dusts dusting dusted;
                                       wipe wipes wiping wiped +off*
carry          | carry |             | carry carries carrying carried
fix            | fix   |             | fix fixes fixing fixed; repair repairs repairing repaired
photograph     | any   |             | take takes taking took +a picture of;
                                       photograph photographs photographing photographed
point at       | any   |             | point points pointing pointed +at; point points pointing pointed +to
smell          | smell |             | smell smells smelling smelled; sniff sniffs sniffing sniffed
tidy           | clean |             | tidy tidies tidying tidied +up*;
                                       straighten straightens straightening straightened
"""

# names (synonyms split by "/") | tags (affordances) | "mass" for plural or mass nouns
_OBJECT_TABLE = """
door                | open clean
window              | open clean
box                 | open carry
cabinet/cupboard    | open clean
refrigerator/fridge | open clean
laptop/computer     | open carry power read play plug fix
book/notebook       | open carry read
phone/cellphone     | carry power read play plug fix
light/lamp          | power plug fix
television/tv       | power plug fix
cup/mug             | carry drink fill clean smell
glass               | carry drink fill clean
bottle              | carry drink fill smell
sandwich            | carry food smell
shoes/sneakers      | wear carry clean smell       | mass
jacket/coat         | wear fold carry
chair               | seat carry clean
sofa/couch          | seat rest clean
bed                 | seat rest
towel               | fold carry clean smell
blanket             | fold carry
bag/backpack        | open carry
drawer              | open clean
closet/wardrobe     | open clean
camera              | carry power play fix
bowl                | carry fill clean
plate               | carry clean
dishes              | carry clean                  | mass
clothes/laundry     | fold carry clean smell       | mass
hat/cap             | wear carry
glasses             | wear clean                   | mass
shirt/sweater       | wear fold clean smell
pillow              | carry
paper/newspaper     | carry read fold
picture/photo       | carry
mirror              | clean
table               | clean
floor               | clean rest
apple               | carry food smell
broom               | carry
vacuum              | power carry plug
radio               | power carry play plug fix
toy                 | carry play
medicine            | carry                        | mass
groceries           | carry                        | mass
desk                | clean
shelf               | clean
food                | carry food smell             | mass
"""


def _parse_verb(spec: str) -> Verb:
    forms, _, particle = spec.partition("+")
    separable = particle.endswith("*")
    return Verb(*forms.split(), particle=particle.rstrip("*").strip(), separable=separable)


def _parse_actions(table: str) -> tuple[Action, ...]:
    rows: list[str] = []
    for line in table.strip().splitlines():
        if "|" in line:
            rows.append(line)
        else:  # a continuation of the verbs of the row above
            rows[-1] += " " + line.strip()
    actions = []
    for row in rows:
        name, tag, reverse, verbs = (field.strip() for field in row.split("|"))
        parsed = tuple(_parse_verb(v) for v in verbs.split(";") if v.strip())
        actions.append(Action(name, parsed, tag, reverse or None))
    return tuple(actions)


def _parse_objects(table: str) -> tuple[Object, ...]:
    objects = []
    for row in table.strip().splitlines():
        names, tags, *mass = (field.strip() for field in row.split("|"))
        objects.append(Object(tuple(names.split("/")), frozenset(tags.split()), countable=not mass))
    return tuple(objects)


ACTIONS = _parse_actions(_ACTION_TABLE)
OBJECTS = _parse_objects(_OBJECT_TABLE)
SUBJECTS = (
    ("a person", "their"), ("the person", "their"), ("person", "their"), ("someone", "their"),
    ("a man", "his"), ("the man", "his"), ("a woman", "her"), ("the woman", "her"),
    ("a boy", "his"), ("a girl", "her"),
)  # fmt: skip
# {s} {ing} {past} {base}: the verb phrase (verb + object) in that form.
TEMPLATES = (
    "{subj} {s}.", "{subj} {s}.", "{subj} is {ing}.", "{subj} {past}.", "{subj} {base}.",
    "{subj} goes over and {s}.", "{subj} starts {ing}.", "{subj} begins to {base}.",
    "{subj} then {s}.", "then {subj} {s}.", "{subj} {s} {adv}.", "{subj} {pre} {s}.",
    "{subj} is seen {ing}.", "{subj} {past} {adv}.", "{subj} tries to {base}.",
)  # fmt: skip
ADVERBS = ("quickly", "slowly", "carefully", "again")  # after the verb phrase
PRE_ADVERBS = ("quickly", "slowly", "carefully", "also")  # before the verb
_ARTICLES = ("the", "the", "a")
_MASS_ARTICLES = ("the", "the", "some")


def vocabulary_words() -> set[str]:
    """Every token a generated sentence can contain (for the 'all words are in GloVe' check)."""
    texts = [s for s, _ in SUBJECTS] + [p for _, p in SUBJECTS] + [*TEMPLATES, *ADVERBS, *PRE_ADVERBS]
    texts += ["an", *_ARTICLES, *_MASS_ARTICLES, "after before for the time", *ORDINALS]
    for action in ACTIONS:
        for verb in action.verbs:
            texts += [verb.base, verb.s, verb.ing, verb.past, verb.particle]
    for obj in OBJECTS:
        texts += list(obj.names)
    return {tok for text in texts for tok in tokenize(re.sub(r"\{\w+\}", " ", text))}


def compatible_pairs(n_actions: int, n_objects: int) -> list[tuple[int, int]]:
    """(action, object) index pairs that make sense, among the first n_actions and n_objects."""
    return [
        (a, o)
        for a in range(n_actions)
        for o in range(n_objects)
        if ACTIONS[a].tag == "any" or ACTIONS[a].tag in OBJECTS[o].tags
    ]


# --------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class SynthConfig:
    """Every size and difficulty knob of the synthetic benchmark."""

    seed: int = 0
    n_train_videos: int = 5338
    n_test_videos: int = 1334
    feature_dim: int = 256
    n_actions: int = 30  # the first n of ACTIONS
    n_objects: int = 40  # the first n of OBJECTS
    # Videos: gamma-distributed durations (seconds), clipped; one feature per second. A video
    # grows to fit its events, so the realised mean is ~31 s (Charades-STA: 30.6 s).
    mean_duration: float = 27.0
    duration_std: float = 8.0
    min_duration: float = 12.0
    max_duration: float = 60.0
    # Events: 3-6 per video, lengths gamma-distributed, at most max_coverage of the video.
    min_events: int = 3
    max_events: int = 6
    mean_moment: float = 8.0
    moment_std: float = 3.5
    min_moment: float = 2.0
    max_coverage: float = 0.9
    boundary_jitter: float = 1.0  # std (s) of the annotation noise on each written boundary
    train_queries_per_video: float = 2.32  # Charades-STA: 12,408 / 5,338
    test_queries_per_video: float = 2.79  # 3,720 / 1,334
    distractor_share: float = 0.6  # P(an event shares the action or the object of an earlier one)
    reverse_share: float = 0.5  # P(a shared-object distractor uses the reverse action, if any)
    # Repeated events (off in the Charades-like presets): P(a video of >= 3 events shows one of its
    # (action, object) pairs twice). A query about a repeated event names which one it means: by a
    # neighbouring event ("... after closing the door") with P relation_share, else by its order
    # ("... for the second time"). Grounding it needs relations across events, not just matching.
    repeat_share: float = 0.0
    relation_share: float = 0.5
    # Features.
    noise_std: float = 0.5  # per feature value; a prototype has norm 1
    drift_std: float = 0.05  # stationary std of the AR(1) background drift, per value
    drift_rho: float = 0.9  # AR(1) coefficient per second
    scene_norm: float = 1.0  # norm of the per-video scene vector
    scene_objects: int = 3  # object prototypes standing in the room all video long
    scene_object_strength: float = 0.35
    ramp_seconds: float = 1.5  # soft onset/offset length
    ramp_jitter: float = 0.5  # ramp length ~ U(ramp_seconds -/+ ramp_jitter)
    phase_crossfade: float = 0.3  # fraction of the event over which phase A fades into phase B
    amplitude_jitter: float = 0.25  # event amplitude ~ U(1 -/+ jitter)
    instance_std: float = 0.5  # per-event perturbation of the prototypes (relative norm)
    pair_strength: float = 0.3  # norm of the (action, object)-specific vector
    prototype_similarity: float = 0.2  # cosine between any two phase (or object) prototypes
    gain_sigma: float = 0.3  # per-video gain ~ lognormal(0, sigma)
    # How the features look. "gaussian": the sum above, zero-mean, signed, row L2 ~8 at D = 256 (every
    # number before this knob). "i3d": the same videos (same draws) mapped per value to look like real
    # I3D rgb features (`to_i3d_style`): non-negative, ~2% exact zeros, a strong shared positive mean
    # profile (cosine between any two clips ~0.82), row L2 ~i3d_row_norm times the per-video gain.
    feature_style: str = "gaussian"
    i3d_row_norm: float = 9.5  # mean row L2 before the gain (real I3D rgb fixtures: 8.4 to 13.1)
    i3d_variation: float = 0.5  # relative size of the content part next to the mean profile

    def __post_init__(self) -> None:
        if self.feature_style not in FEATURE_STYLES:
            raise ConfigError(
                f"synth.feature_style must be one of {', '.join(FEATURE_STYLES)}, got {self.feature_style!r}"
            )
        if self.i3d_row_norm <= 0 or self.i3d_variation <= 0:
            raise ConfigError("synth: i3d_row_norm and i3d_variation must be > 0")
        if not 2 <= self.n_actions <= len(ACTIONS):
            raise ConfigError(f"synth.n_actions must be in [2, {len(ACTIONS)}], got {self.n_actions}")
        if not 2 <= self.n_objects <= len(OBJECTS):
            raise ConfigError(f"synth.n_objects must be in [2, {len(OBJECTS)}], got {self.n_objects}")
        if not 1 <= self.min_events <= self.max_events:
            raise ConfigError("synth: need 1 <= min_events <= max_events")
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError("synth: need 0 < min_duration <= max_duration")
        if self.min_events * self.min_moment > self.max_coverage * self.min_duration:
            raise ConfigError("synth: min_events events of min_moment do not fit in min_duration")
        if self.seed < 0:
            raise ConfigError(f"synth.seed must be >= 0, got {self.seed}")
        if self.n_train_videos < 0 or self.n_test_videos < 0 or self.feature_dim < 1:
            raise ConfigError("synth: video counts must be >= 0 and feature_dim >= 1")
        if not (0 <= self.repeat_share <= 1 and 0 <= self.relation_share <= 1):
            raise ConfigError("synth: repeat_share and relation_share must be probabilities in [0, 1]")


_SMALL = {"n_train_videos": 1500, "n_test_videos": 375}
_HARD = {"repeat_share": 1.0, "distractor_share": 0.9, "reverse_share": 0.8}
PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(n_train_videos=60, n_test_videos=20, feature_dim=64),
    "small": SynthConfig(**_SMALL),
    "default": SynthConfig(),
    # Harder: most videos repeat an event, and its queries say which instance they mean.
    "small-relational": SynthConfig(**_SMALL, repeat_share=0.8),
    "relational": SynthConfig(repeat_share=0.8),
    # Hardest: every video of >= 3 events is asked to repeat one (57% do; a twin that does not fit
    # is dropped), 80% of the later events share an action or object with an earlier one, and most
    # shared-object distractors are the reverse action (docs/RESULTS.md).
    "small-hard": SynthConfig(**_SMALL, **_HARD),
    "hard": SynthConfig(**_HARD),
    # The same two with features that look like real I3D rgb (non-negative, sparse, shared mean profile).
    "small-hard-i3d": SynthConfig(**_SMALL, **_HARD, feature_style="i3d"),
    "hard-i3d": SynthConfig(**_HARD, feature_style="i3d"),
    # Never used to choose any model's defaults: a held-out shift of `default`, its rule fixed before
    # any result on it was seen. Features shaped like I3D at twice the width; videos and moments 1.5x
    # longer (up to 90 s, so the 64-clip grid holds clips of up to 1.4 s); half the videos repeat an
    # event; 2,000 train / 500 test videos.
    "unseen": SynthConfig(
        n_train_videos=2000,
        n_test_videos=500,
        feature_dim=512,
        feature_style="i3d",
        mean_duration=40.5,
        duration_std=12.0,
        min_duration=18.0,
        max_duration=90.0,
        mean_moment=12.0,
        moment_std=5.25,
        min_moment=3.0,
        repeat_share=0.5,
    ),  # fmt: skip
}


class PixelLike(Protocol):
    n_train_videos: int
    n_test_videos: int


def check_both_splits(cfg: SynthConfig | PixelLike) -> None:
    """A benchmark that is written needs videos in both splits (a config for script studies may not)."""
    if cfg.n_train_videos < 1 or cfg.n_test_videos < 1:
        raise ConfigError(
            f"n_train_videos ({cfg.n_train_videos}) and n_test_videos ({cfg.n_test_videos}) must each be "
            ">= 1 to write a benchmark: it needs both a train and a test split"
        )


def with_overrides(cfg: C, overrides: dict[str, object], flag: str = "--set") -> C:
    """`cfg` (a SynthConfig or PixelConfig) with some knobs changed ({"noise_std": 0.25}); unknown knobs
    and wrong types are refused."""
    knobs = {f.name: type(getattr(cfg, f.name)) for f in fields(cfg)}
    changed = {}
    for key, value in overrides.items():
        if key not in knobs:
            raise ConfigError(f"{flag} {key}: not a synth knob; the knobs are {', '.join(knobs)}")
        want = knobs[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(
                f"{flag} {key}={value!r}: expected type {want.__name__}, like {getattr(cfg, key)!r}"
            )
        changed[key] = value
    return replace(cfg, **changed)


def preset_name(cfg: SynthConfig) -> str | None:
    return next((name for name, preset in PRESETS.items() if preset == cfg), None)


# --------------------------------------------------------------------------------------------
# Scripts: what happens in each video, and the queries about it


@dataclass
class Event:
    action: int
    object: int
    start: float  # seconds, 0.1 s resolution
    end: float


@dataclass
class Query:
    event: int  # index into VideoScript.events
    sentence: str
    start: float  # the annotated moment: the event's span plus annotation noise
    end: float


@dataclass
class VideoScript:
    video_id: str
    split: str
    index: int  # global video index: seeds this video's random streams
    duration: float
    events: list[Event]
    queries: list[Query] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return max(1, round(self.duration))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _gamma(rng: np.random.Generator, mean: float, std: float) -> float:
    shape = (mean / std) ** 2
    return float(rng.gamma(shape, mean / shape))


@dataclass
class PairTable:
    """The compatible (action, object) pairs, also indexed by action and by object."""

    pairs: list[tuple[int, int]]
    by_action: dict[int, list[tuple[int, int]]]
    by_object: dict[int, list[tuple[int, int]]]

    @classmethod
    def build(cls, n_actions: int, n_objects: int) -> PairTable:
        pairs = compatible_pairs(n_actions, n_objects)
        by_action: dict[int, list[tuple[int, int]]] = {}
        by_object: dict[int, list[tuple[int, int]]] = {}
        for a, o in pairs:
            by_action.setdefault(a, []).append((a, o))
            by_object.setdefault(o, []).append((a, o))
        return cls(pairs, by_action, by_object)


def _sample_events(cfg: SynthConfig, rng: np.random.Generator, table: PairTable) -> list[tuple[int, int]]:
    """3-6 unique (action, object) pairs; later ones often share the action or object of earlier ones."""
    n = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    chosen = [table.pairs[int(rng.integers(len(table.pairs)))]]
    while len(chosen) < n:
        a0, o0 = chosen[int(rng.integers(len(chosen)))]
        candidates: list[tuple[int, int]] = []
        if rng.random() < cfg.distractor_share:
            if rng.random() < 0.5:  # same object, another action (often the reverse one)
                reverse = _reverse_index(a0, cfg.n_actions)
                if reverse is not None and rng.random() < cfg.reverse_share:
                    candidates = [p for p in table.by_object[o0] if p[0] == reverse]
                candidates = candidates or table.by_object[o0]
            else:  # same action, another object
                candidates = table.by_action[a0]
        candidates = [p for p in candidates if p not in chosen] or [p for p in table.pairs if p not in chosen]
        chosen.append(candidates[int(rng.integers(len(candidates)))])
    if cfg.repeat_share > 0 and n >= 3 and rng.random() < cfg.repeat_share:
        chosen[-1] = chosen[int(rng.integers(n - 1))]  # one pair happens twice
    return [chosen[i] for i in rng.permutation(len(chosen))]  # the anchor is not always first


def _reverse_index(a: int, n_actions: int) -> int | None:
    name = ACTIONS[a].name
    for b in range(n_actions):
        if ACTIONS[b].reverse_of == name or ACTIONS[a].reverse_of == ACTIONS[b].name:
            return b
    return None


def _place_events(
    cfg: SynthConfig, rng: np.random.Generator, n: int, duration: float
) -> tuple[float, list[tuple[float, float]]]:
    """(duration, non-overlapping [start, end] spans with random gaps between them).

    Events that do not fit in max_coverage of the video are dropped (down to min_events); if
    the rest still do not fit, the video grows (up to max_duration), then the events shrink.
    """
    lengths = [max(cfg.min_moment, _gamma(rng, cfg.mean_moment, cfg.moment_std)) for _ in range(n)]
    while sum(lengths) > cfg.max_coverage * duration and len(lengths) > cfg.min_events:
        lengths.pop(int(rng.integers(len(lengths))))
    duration = round(min(max(duration, sum(lengths) / cfg.max_coverage), cfg.max_duration), 2)
    room = cfg.max_coverage * duration
    if sum(lengths) > room:  # shrink the part above min_moment
        extra = [x - cfg.min_moment for x in lengths]
        scale = (room - cfg.min_moment * len(lengths)) / sum(extra)
        lengths = [cfg.min_moment + e * scale for e in extra]
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * (duration - sum(lengths))
    spans, t = [], 0.0
    for gap, length in zip(gaps, lengths):
        start = t + gap
        spans.append((start, start + length))
        t = start + length
    # 0.1 s resolution, never past the end of the video
    return duration, [(round(s, 1), min(round(e, 1), duration)) for s, e in spans]


def make_scripts(cfg: SynthConfig) -> dict[str, list[VideoScript]]:
    """All videos of both splits (events, durations, queries, sentences), without features."""
    table = PairTable.build(cfg.n_actions, cfg.n_objects)
    if len(table.pairs) < cfg.max_events:
        raise ConfigError(
            f"synth: only {len(table.pairs)} (action, object) pairs for {cfg.max_events} events"
        )
    width = max(4, len(str(cfg.n_train_videos + cfg.n_test_videos)))
    scripts: dict[str, list[VideoScript]] = {"train": [], "test": []}
    index = 0
    for split, n_videos, q_mean in (
        ("train", cfg.n_train_videos, cfg.train_queries_per_video),
        ("test", cfg.n_test_videos, cfg.test_queries_per_video),
    ):
        for _ in range(n_videos):
            rng = _rng(cfg.seed, index, 0)
            duration = _gamma(rng, cfg.mean_duration, cfg.duration_std)
            duration = round(min(max(duration, cfg.min_duration), cfg.max_duration), 2)
            chosen = _sample_events(cfg, rng, table)
            duration, spans = _place_events(cfg, rng, len(chosen), duration)
            events = [Event(a, o, s, e) for (a, o), (s, e) in zip(chosen[: len(spans)], spans)]
            video_id = f"S{index:0{width}d}{chr(65 + int(rng.integers(26)))}"
            script = VideoScript(video_id, split, index, duration, events)
            # 1 + Binomial(n - 1, p): mean exactly q_mean whenever q_mean <= n.
            p = min(1.0, max(0.0, (q_mean - 1) / max(1, len(events) - 1)))
            n_queries = 1 + int(rng.binomial(len(events) - 1, p))
            for k in sorted(rng.choice(len(events), size=n_queries, replace=False).tolist()):
                repeated = (
                    sum((e.action, e.object) == (events[k].action, events[k].object) for e in events) > 1
                )
                sentence = make_sentence(events[k].action, events[k].object, rng, repeated)
                if repeated:
                    sentence = disambiguate(sentence, events, k, cfg.relation_share, rng)
                start, end = _annotate(cfg, rng, events[k], duration)
                script.queries.append(Query(k, sentence, start, end))
            scripts[split].append(script)
            index += 1
    return scripts


def _annotate(
    cfg: SynthConfig, rng: np.random.Generator, event: Event, duration: float
) -> tuple[float, float]:
    """The moment an annotator writes: the event's span, each boundary off by N(0, boundary_jitter) s."""
    start, end = (
        round(min(max(t + rng.normal(0, cfg.boundary_jitter), 0), duration), 1)
        for t in (event.start, event.end)
    )
    end = min(end, duration)
    if end - start < min(1.0, event.end - event.start):  # an annotator would not write that
        return event.start, event.end
    return start, end


def disambiguate(
    sentence: str, events: list[Event], k: int, relation_share: float, rng: np.random.Generator
) -> str:
    """Say which instance of a repeated event the query means: by a neighbour ("... after opening the
    door") with P relation_share when one differs from it, else by order ("... for the second time")."""
    pair = (events[k].action, events[k].object)
    twins = [j for j, e in enumerate(events) if (e.action, e.object) == pair]
    if len(twins) < 2:
        return sentence
    neighbours = [
        (word, j)
        for word, j in (("after", k - 1), ("before", k + 1))
        if 0 <= j < len(events) and (events[j].action, events[j].object) != pair
    ]
    if neighbours and rng.random() < relation_share:
        word, j = neighbours[int(rng.integers(len(neighbours)))]
        phrase = verb_phrases(events[j].action, events[j].object, rng, "their")["ing"]
        return f"{sentence.rstrip('.')} {word} {phrase}."
    return f"{sentence.rstrip('.')} for the {ORDINALS[twins.index(k)]} time."


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
QUERY_KINDS = ("single", "ordinal", "relational")
_ORDINAL_SUFFIX = re.compile(rf" for the (?:{'|'.join(ORDINALS)}) time\.$")
_RELATION_SUFFIX = re.compile(r" (?:after|before) \S+ing\b[^.]*\.$")


def query_kind(sentence: str) -> str:
    """How a sentence of the built-in benchmark names its event: 'single' (the event happens once),
    'ordinal' (a repeated event, "... for the second time.") or 'relational' (a repeated event named
    by a neighbour, "... after opening the door."), read back from what `disambiguate` appends."""
    if _ORDINAL_SUFFIX.search(sentence):
        return "ordinal"
    if _RELATION_SUFFIX.search(sentence):
        return "relational"
    return "single"


def verb_phrases(action: int, obj: int, rng: np.random.Generator, possessive: str) -> dict[str, str]:
    """The verb phrase of (action, object) in each verb form: base, s, ing, past."""
    verb = ACTIONS[action].verbs[int(rng.integers(len(ACTIONS[action].verbs)))]
    target = OBJECTS[obj]
    name = target.names[int(rng.integers(len(target.names)))]
    articles = (*(_ARTICLES if target.countable else _MASS_ARTICLES), possessive)
    article = articles[int(rng.integers(len(articles)))]
    if article == "a" and name[0] in "aeiou":
        article = "an"
    noun = f"{article} {name}"
    after = verb.separable and rng.random() < 0.4
    forms = {}
    for key in ("base", "s", "ing", "past"):
        head = getattr(verb, key)
        if not verb.particle:
            forms[key] = f"{head} {noun}"
        else:
            forms[key] = f"{head} {noun} {verb.particle}" if after else f"{head} {verb.particle} {noun}"
    return forms


def make_sentence(action: int, obj: int, rng: np.random.Generator, repeated: bool = False) -> str:
    """One description of (action, object), from a random template, verb, name and article. For a
    repeated event the adverb 'again' is replaced: disambiguate() says which instance is meant."""
    subject, possessive = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    forms = verb_phrases(action, obj, rng, possessive)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    adverb, pre = ADVERBS[int(rng.integers(len(ADVERBS)))], PRE_ADVERBS[int(rng.integers(len(PRE_ADVERBS)))]
    if repeated and adverb == "again":
        adverb = "carefully"
    return template.format(subj=subject, adv=adverb, pre=pre, **forms)


def script_samples(scripts: Iterable[VideoScript]) -> list[Sample]:
    samples = []
    for script in scripts:
        for k, q in enumerate(script.queries):
            sample_id = f"{script.video_id}_{k}"
            samples.append(Sample(sample_id, script.video_id, script.duration, q.start, q.end, q.sentence))
    return samples


# --------------------------------------------------------------------------------------------
# Features


@dataclass
class Prototypes:
    phases: np.ndarray  # (n_phase, D) unit vectors
    action_phases: list[tuple[int, int]]  # action -> (phase A, phase B)
    objects: np.ndarray  # (n_objects, D) unit vectors


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _random_units(rng: np.random.Generator, n: int, dim: int, similarity: float) -> np.ndarray:
    """n unit vectors whose pairwise cosine is ~similarity (a shared direction plus own parts)."""
    common = _unit(rng.standard_normal(dim))
    own = _unit(rng.standard_normal((n, dim)))
    return _unit(np.sqrt(similarity) * common + np.sqrt(1 - similarity) * own)


def make_prototypes(cfg: SynthConfig) -> Prototypes:
    """Two phases per action (a reverse action reuses its partner's, swapped), one per object."""
    names = [a.name for a in ACTIONS]
    action_phases: list[tuple[int, int]] = []
    n_phases = 0
    for action in ACTIONS:
        if action.reverse_of is not None:
            a, b = action_phases[names.index(action.reverse_of)]
            action_phases.append((b, a))
        else:
            action_phases.append((n_phases, n_phases + 1))
            n_phases += 2
    rng = _rng(cfg.seed, 1 << 40)
    phases = _random_units(rng, n_phases, cfg.feature_dim, cfg.prototype_similarity)
    objects = _random_units(rng, len(OBJECTS), cfg.feature_dim, cfg.prototype_similarity)
    return Prototypes(phases.astype(np.float32), action_phases, objects.astype(np.float32))


def _pair_vector(cfg: SynthConfig, action: int, obj: int) -> np.ndarray:
    return _unit(_rng(cfg.seed, 1 << 41, action, obj).standard_normal(cfg.feature_dim))


@dataclass
class Layer:
    """Something that happens over [start, end]: phase_a fading into phase_b, plus a steady part."""

    start: float
    end: float
    phase_a: np.ndarray
    phase_b: np.ndarray
    steady: np.ndarray


def render(
    cfg: SynthConfig, n_frames: int, layers: list[Layer], scene: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(n_frames, D) float32 features: scene + drift + ramped layers + noise, times a random gain."""
    dim = cfg.feature_dim
    t = np.arange(n_frames) + 0.5  # frame t covers second [t, t + 1)
    x = np.tile(scene, (n_frames, 1))
    drift = rng.standard_normal((n_frames, dim)) * cfg.drift_std
    for i in range(1, n_frames):  # stationary AR(1): slowly varying background
        drift[i] = cfg.drift_rho * drift[i - 1] + np.sqrt(1 - cfg.drift_rho**2) * drift[i]
    x += drift
    for layer in layers:
        ramp = rng.uniform(cfg.ramp_seconds - cfg.ramp_jitter, cfg.ramp_seconds + cfg.ramp_jitter)
        ramp = max(ramp, 1e-3)
        up = np.clip((t - layer.start) / ramp + 0.5, 0, 1)
        down = np.clip((layer.end - t) / ramp + 0.5, 0, 1)
        weight = np.minimum(up, down) * rng.uniform(1 - cfg.amplitude_jitter, 1 + cfg.amplitude_jitter)
        progress = (t - layer.start) / max(layer.end - layer.start, 1e-3)
        split = 0.5 + rng.uniform(-0.1, 0.1)
        to_b = np.clip((progress - split) / max(cfg.phase_crossfade, 1e-3) + 0.5, 0, 1)[:, None]
        a, b, steady = (
            _perturb(v, cfg.instance_std, rng) for v in (layer.phase_a, layer.phase_b, layer.steady)
        )
        x += weight[:, None] * ((1 - to_b) * a + to_b * b + steady)
    x += rng.standard_normal((n_frames, dim)) * cfg.noise_std
    gain = rng.lognormal(0.0, cfg.gain_sigma)
    if cfg.feature_style == "i3d":
        return to_i3d_style(cfg, x, gain)
    x *= gain
    return x.astype(np.float32)


def i3d_mean_profile(cfg: SynthConfig) -> np.ndarray:
    """The fixed positive mean of every i3d-style feature: (D,) exponential values (real I3D rgb
    features: element std about the element mean), seeded by the config's seed only."""
    return _rng(cfg.seed, 1 << 42).exponential(1.0, cfg.feature_dim)


def to_i3d_style(cfg: SynthConfig, x: np.ndarray, gain: float) -> np.ndarray:
    """Real-looking features from the gaussian ones `x` (before the gain), value by value:

        gain * s * relu(m * (1 + i3d_variation * x / rms))

    m = `i3d_mean_profile` (shared by every clip of every video), rms = the expected per-value rms of
    `x` (noise, drift, scene and one event), s so that the mean row L2 is `i3d_row_norm` at gain 1.
    Monotone and invertible wherever the value is not clipped (~2%), so the content of `x` is kept."""
    m = i3d_mean_profile(cfg)
    rms = np.sqrt(cfg.noise_std**2 + cfg.drift_std**2 + (cfg.scene_norm**2 + 1.0) / cfg.feature_dim)
    c = cfg.i3d_variation
    scale = cfg.i3d_row_norm / np.sqrt(float(np.sum(m**2)) * (1 + c**2))
    y = np.maximum(m * (1.0 + c * x / rms), 0.0)
    return (y * (gain * scale)).astype(np.float32)


def _perturb(v: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0 or std == 0:
        return v
    return v + std * norm * _unit(rng.standard_normal(v.shape[0]))


def _scene(
    cfg: SynthConfig, rng: np.random.Generator, protos: Prototypes, used_objects: list[int]
) -> np.ndarray:
    """Per-video scene vector plus a few objects standing in the room (often ones used in it)."""
    scene = cfg.scene_norm * _unit(rng.standard_normal(cfg.feature_dim))
    for _ in range(cfg.scene_objects):
        if used_objects and rng.random() < 0.5:
            obj = used_objects[int(rng.integers(len(used_objects)))]
        else:
            obj = int(rng.integers(cfg.n_objects))
        scene = scene + cfg.scene_object_strength * protos.objects[obj]
    return scene


def render_video(cfg: SynthConfig, script: VideoScript, protos: Prototypes) -> np.ndarray:
    """The (T, D) features of one scripted video; T = round(duration)."""
    rng = _rng(cfg.seed, script.index, 1)
    layers = []
    for event in script.events:
        a, b = protos.action_phases[event.action]
        steady = protos.objects[event.object] + cfg.pair_strength * _pair_vector(
            cfg, event.action, event.object
        )
        layers.append(Layer(event.start, event.end, protos.phases[a], protos.phases[b], steady))
    scene = _scene(cfg, rng, protos, [e.object for e in script.events])
    return render(cfg, script.n_frames, layers, scene, rng)


# --------------------------------------------------------------------------------------------
# Writing a benchmark


def _write_features(
    items: Iterator[tuple[str, np.ndarray]], out_dir: Path, feature_format: str, total: int, progress: bool
) -> str:
    """Write (video_id, features) pairs as features/{vid}.npy or features.h5; return the yaml entry."""
    from tqdm import tqdm

    items = iter(tqdm(items, total=total, desc="synthesizing features", unit=" videos", disable=not progress))
    if feature_format == "h5":
        write_h5(items, out_dir / "features.h5")
        return "features.h5"
    while chunk := dict(islice(items, _CHUNK)):
        write_npy_dir(chunk, out_dir / "features")
    return "features"


def _check_format(feature_format: str) -> None:
    if feature_format not in FEATURE_FORMATS:
        raise ConfigError(
            f"feature_format must be one of {', '.join(FEATURE_FORMATS)}, got {feature_format!r}"
        )


def _write_yaml(path: Path, data: dict) -> None:
    with atomic_open(path) as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def generate(cfg: SynthConfig, out_dir: PathLike, feature_format: str = "npy", progress: bool = True) -> Path:
    """Write the synthetic benchmark (Charades-STA layout) to out_dir; return its data.yaml path."""
    _check_format(feature_format)
    check_both_splits(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts = make_scripts(cfg)
    for split, split_scripts in scripts.items():
        write_charades_sta(script_samples(split_scripts), out_dir / f"{split}.txt")
    all_scripts = scripts["train"] + scripts["test"]
    write_durations({s.video_id: s.duration for s in all_scripts}, out_dir / "durations.json")
    protos = make_prototypes(cfg)
    items = ((s.video_id, render_video(cfg, s, protos)) for s in all_scripts)
    features = _write_features(items, out_dir, feature_format, len(all_scripts), progress)
    synth = asdict(cfg)
    if (name := preset_name(cfg)) is not None:
        synth["preset"] = name
    data = {
        "format": "charades_sta",
        "splits": {"train": "train.txt", "test": "test.txt"},
        "durations": "durations.json",
        "features": features,
        "word_vectors": "glove-6b-50d",
        "max_video_len": 64,
        "synth": synth,
    }
    _write_yaml(out_dir / "data.yaml", data)
    return out_dir / "data.yaml"


# --------------------------------------------------------------------------------------------
# Synthetic features for real annotations

_STOP = (
    "a an the this that these those is are was were be been being am 's and or but then while as "
    "of to from for with by at into onto about person someone somebody he she they it him her his "
    "their them its himself herself themselves who which what"
)
STOP_WORDS = frozenset(_STOP.split())


def split_from_filename(path: PathLike) -> str:
    """'train', 'val' or 'test' from a file name; DataError if it names none or several."""
    name = Path(path).name.lower()
    found = [split for split in ("train", "val", "test") if split in name]
    if len(found) != 1:
        raise DataError("cannot tell the split from the file name: it must contain exactly one of "
                        "'train', 'val' or 'test'", path)  # fmt: skip
    return found[0]


class SentenceEncoder:
    """Sentence -> unit vector in feature space: sum over content words of (projected GloVe + hashed)."""

    def __init__(self, dim: int, seed: int, semantic_share: float = 0.5):
        self.dim, self.seed, self.semantic_share = dim, seed, semantic_share
        self.words = load_word_vectors("glove-6b-50d", progress=False)
        rng = _rng(seed, 1 << 42)
        self.projection = rng.standard_normal((dim, self.words.dim)) / np.sqrt(dim)
        self.cache: dict[str, np.ndarray] = {}

    def word(self, word: str) -> np.ndarray:
        if word not in self.cache:
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            hashed = _unit(
                _rng(self.seed, 1 << 43, int.from_bytes(digest, "little")).standard_normal(self.dim)
            )
            glove = self.words.get(word)
            semantic = np.zeros(self.dim) if glove is None else _unit(self.projection @ _unit(glove))
            share = self.semantic_share if glove is not None else 0.0
            self.cache[word] = _unit(np.sqrt(share) * semantic + np.sqrt(1 - share) * hashed)
        return self.cache[word]

    def __call__(self, sentence: str) -> np.ndarray:
        tokens = tokenize(sentence)
        content = [t for t in tokens if t not in STOP_WORDS] or tokens or ["<empty>"]
        return _unit(sum(self.word(t) for t in content))


def _videos_of(samples_per_file: list[list[Sample]], max_videos: int | None) -> dict[str, list[Sample]]:
    """video id -> its samples (moments deduplicated), first-seen order, at most max_videos per file."""
    videos: dict[str, list[Sample]] = {}
    for samples in samples_per_file:
        taken: set[str] = set()
        for sample in samples:
            if sample.video_id not in taken and max_videos is not None and len(taken) >= max_videos:
                continue
            taken.add(sample.video_id)
            moments = videos.setdefault(sample.video_id, [])
            key = (sample.start, sample.end, sample.sentence)
            if all((m.start, m.end, m.sentence) != key for m in moments):
                moments.append(sample)
    return videos


def synthesize_features_for_annotations(
    annotation_paths: list[PathLike],
    fmt: str,
    out_dir: PathLike,
    durations: PathLike | None = None,
    feature_dim: int = 256,
    seed: int = 0,
    feature_format: str = "npy",
    progress: bool = True,
    max_videos: int | None = None,
) -> Path:
    """Synthetic features for real annotation files; returns the data.yaml path in out_dir.

    The data.yaml points to the original annotation files (absolute paths; they are never
    copied). `max_videos` keeps only the first videos of each file (quick tests).
    """
    _check_format(feature_format)
    out_dir = Path(out_dir)
    paths = [Path(p).resolve() for p in annotation_paths]
    splits: dict[str, str] = {}
    for path in paths:
        split = split_from_filename(path)
        if split in splits:
            raise DataError(f"two annotation files for split {split!r}: {splits[split]} and {path}", path)
        splits[split] = str(path)
    per_file = [read_annotations(p, fmt, durations)[0] for p in paths]
    videos = _videos_of(per_file, max_videos)

    cfg = SynthConfig(seed=seed, feature_dim=feature_dim)
    encoder = SentenceEncoder(feature_dim, seed)

    def items() -> Iterator[tuple[str, np.ndarray]]:
        for i, (vid, moments) in enumerate(videos.items()):
            rng = _rng(seed, 1 << 44, i)
            none = np.zeros(feature_dim)  # no action phases: the sentence is the steady part
            layers = [Layer(m.start, m.end, none, none, encoder(m.sentence)) for m in moments]
            scene = cfg.scene_norm * _unit(rng.standard_normal(feature_dim))
            yield vid, render(cfg, max(1, round(moments[0].duration)), layers, scene, rng)

    out_dir.mkdir(parents=True, exist_ok=True)
    features = _write_features(items(), out_dir, feature_format, len(videos), progress)
    data = {
        "format": fmt,
        "splits": splits,
        "features": features,
        "word_vectors": "glove-6b-50d",
        "max_video_len": MAX_VIDEO_LEN.get(fmt, 128),
        "synth": {"mode": "annotations", "feature_dim": feature_dim, "seed": seed, "max_videos": max_videos},
    }
    if isinstance(durations, str | os.PathLike):
        data["durations"] = str(Path(durations).resolve())
    _write_yaml(out_dir / "data.yaml", data)
    return out_dir / "data.yaml"
