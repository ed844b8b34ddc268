"""The real-pixel benchmark's videos: Fashion-MNIST photographs that enter, move and leave a textured scene.

Scripts, sentences and frames only; `emtm.extract.pixel_benchmark` writes the frames as H.264 videos,
runs `emtm extract` on them and writes the annotations. Nothing here makes features.

A video (16-36 s) holds 2-5 *events*. In an event an item (a Fashion-MNIST image of one of 10 classes,
tinted one of 6 colours) fades in, moves left, right, up or down, or grows or shrinks, and fades out.
Events may overlap in time (at most two items at once, in different halves of the frame). Later events
often repeat an earlier event's class or colour, and some repeat both: then a sentence must say which
instance it means, by order ("... for the second time") or by another event ("... after the blue bag
leaves", "... while the red coat is on screen"). Brief *distractors* (0.5-1.25 s, static) show an item
that shares the class or the colour of an event, never both. The background is a per-video texture of
two colours that pans slowly and changes brightness.

Train videos draw their items from the 60k Fashion-MNIST training images, test videos from the 10k test
images: test items are instances never seen in training.

Grammar (every word is in GloVe 6B, checked by the tests). D = "the {colour} {class} {motion}":

    single   D.                                      the item (class + colour) occurs once in the video
    ordinal  D for the {first|second|...} time.      the n-th occurrence of the item, by start time
    after    D after the {colour} {class} leaves.    the only occurrence starting after that event ends
    before   D before the {colour} {class} appears.  the only occurrence ending before that event starts
    while    D while the {colour} {class} is on screen.  the only occurrence overlapping that event (>= 1 s)

The item named after "after", "before" or "while" occurs exactly once in the video. `resolve` checks
every query: the events its words could mean are computed from the script, and a query that does not
pick out exactly one event is dropped. Motion words describe the event but are never needed to tell it
apart (pooled CNN features may not see direction).

The package, by part (every name below is importable from `emtm.data.pixels` itself): `images`
(Fashion-MNIST idx files), `scenes` (config, scripts, sentences) and `frames` (the frame renderer).
"""

from emtm.data.pixels.frames import render_frames
from emtm.data.pixels.images import (
    CLASSES,
    DEFAULT_IMAGES,
    IDX_FILES,
    MISSING_IMAGES,
    ImageSet,
    PathLike,
    idx_paths,
    load_images,
    read_idx,
)
from emtm.data.pixels.scenes import (
    COLOURS,
    MOTIONS,
    ORDINALS,
    PIXEL_PRESETS,
    QUERY_KINDS,
    Appearance,
    PixelConfig,
    PixelQuery,
    PixelScript,
    describe,
    kind_shares,
    make_scripts,
    resolve,
    sentence,
)

__all__ = [
    "CLASSES", "COLOURS", "DEFAULT_IMAGES", "IDX_FILES", "MISSING_IMAGES", "MOTIONS", "ORDINALS",
    "PIXEL_PRESETS", "QUERY_KINDS", "Appearance", "ImageSet", "PathLike", "PixelConfig", "PixelQuery",
    "PixelScript", "describe", "idx_paths", "kind_shares", "load_images", "make_scripts", "read_idx",
    "render_frames", "resolve", "sentence",
]  # fmt: skip
