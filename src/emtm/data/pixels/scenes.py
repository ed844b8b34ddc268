"""The real-pixel benchmark's scene scripts: its knobs (`PixelConfig`, `PIXEL_PRESETS`), what happens
in each video (events, distractors, which image each shows) and the checked queries about it
(`make_scripts`, `resolve`, `sentence`); the grammar is in the `emtm.data.pixels` docstring."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emtm.data.pixels.images import CLASSES, ImageSet
from emtm.errors import ConfigError

COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (45, 80, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 200),
    "orange": (245, 140, 30),
}
MOTIONS = {  # motion -> the phrases a sentence may use for it
    "left": ("moves to the left", "slides left"),
    "right": ("moves to the right", "slides right"),
    "up": ("moves up", "rises"),
    "down": ("moves down", "sinks"),
    "grow": ("grows", "gets bigger"),
    "shrink": ("shrinks", "gets smaller"),
}
ORDINALS = ("first", "second", "third", "fourth", "fifth")
QUERY_KINDS = ("single", "ordinal", "after", "before", "while")


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PixelConfig:
    """Every knob of the pixel benchmark's videos and sentences."""

    seed: int = 0
    n_train_videos: int = 2000
    n_test_videos: int = 500
    queries_per_video: int = 3
    frame_size: int = 112  # pixels (square)
    video_fps: int = 4  # frames written per second
    min_duration: float = 16.0
    max_duration: float = 36.0
    min_events: int = 2
    max_events: int = 5
    min_event: float = 3.0  # event length (s)
    max_event: float = 9.0
    fade: float = 0.5  # seconds over which an item fades in and out
    repeat_share: float = 0.35  # P(a later event repeats an earlier event's class and colour)
    share_share: float = 0.5  # else P(it shares the class or the colour of an earlier event)
    distractors_per_video: float = 1.5  # Poisson mean of brief distractor appearances
    relation_share: float = 0.5  # P(a query uses after/before/while when one is valid)
    item_scale: float = 1.3  # an item is 28 * scale px (grow/shrink go from 0.7x to 1.5x of it)

    def __post_init__(self) -> None:
        if self.n_train_videos < 0 or self.n_test_videos < 0:
            raise ConfigError("pixels: video counts must be >= 0")
        if not 1 <= self.min_events <= self.max_events <= len(ORDINALS):
            raise ConfigError(f"pixels: need 1 <= min_events <= max_events <= {len(ORDINALS)}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError("pixels: need 0 < min_duration <= max_duration")
        if not 2 * self.fade < self.min_event <= self.max_event < self.min_duration:
            raise ConfigError("pixels: need 2 * fade < min_event <= max_event < min_duration")
        if self.frame_size < 32 or self.frame_size % 2 or self.video_fps < 1:
            raise ConfigError("pixels: frame_size must be even and >= 32, video_fps >= 1")
        if self.queries_per_video < 1 or self.seed < 0:
            raise ConfigError("pixels: queries_per_video must be >= 1 and seed >= 0")
        for name in ("repeat_share", "share_share", "relation_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"pixels.{name} must be a probability in [0, 1]")


PIXEL_PRESETS: dict[str, PixelConfig] = {
    "pixels": PixelConfig(),
    "small-pixels": PixelConfig(n_train_videos=200, n_test_videos=50),
}


# --------------------------------------------------------------------------------------------- scripts
@dataclass
class Appearance:
    """One item on screen from `start` to `end` s: an event (`motion` set) or a distractor (motion None)."""

    cls: int
    colour: str
    image: int  # index into the split's Fashion-MNIST images
    start: float
    end: float
    motion: str | None
    x0: float  # centre at start, in [0, 1] of the frame
    y0: float
    x1: float  # centre at end
    y1: float

    @property
    def item(self) -> tuple[int, str]:
        return (self.cls, self.colour)

    def name(self) -> str:
        return f"{self.colour} {CLASSES[self.cls]}"


@dataclass
class PixelQuery:
    """A sentence, what it says (kind, target item, ordinal or reference event) and its event."""

    event: int
    kind: str
    sentence: str
    ordinal: int = 0  # 1-based, for 'ordinal'
    reference: int = -1  # event index, for after/before/while


@dataclass
class PixelScript:
    video_id: str
    split: str
    index: int
    duration: float
    events: list[Appearance]
    distractors: list[Appearance]
    queries: list[PixelQuery] = field(default_factory=list)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _overlap(a: Appearance, b: Appearance) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def _pick_item(rng: np.random.Generator, earlier: list[tuple[int, str]], cfg: PixelConfig) -> tuple[int, str]:
    colours = list(COLOURS)
    if earlier and rng.random() < cfg.repeat_share:
        return earlier[int(rng.integers(len(earlier)))]
    if earlier and rng.random() < cfg.share_share:
        cls, colour = earlier[int(rng.integers(len(earlier)))]
        if rng.random() < 0.5:  # same class, another colour
            return cls, colours[
                (colours.index(colour) + 1 + int(rng.integers(len(colours) - 1))) % len(colours)
            ]
        return (cls + 1 + int(rng.integers(len(CLASSES) - 1))) % len(CLASSES), colour
    return int(rng.integers(len(CLASSES))), colours[int(rng.integers(len(colours)))]


def _path(
    rng: np.random.Generator, motion: str | None, half: int | None
) -> tuple[float, float, float, float]:
    """Start and end centre of an item; `half` (0 or 1) keeps it in one half, across the motion."""
    lo, hi = 0.25, 0.75
    a, b = float(rng.uniform(0.22, 0.36)), float(rng.uniform(0.64, 0.78))  # the motion's extent
    fixed = float(rng.uniform(lo, hi)) if half is None else (0.28, 0.72)[half]
    if motion in ("left", "right"):  # moves along x, its row fixed
        x0, x1 = (b, a) if motion == "left" else (a, b)
        return x0, fixed, x1, fixed
    if motion in ("up", "down"):  # moves along y, its column fixed
        y0, y1 = (b, a) if motion == "up" else (a, b)
        return fixed, y0, fixed, y1
    other = float(rng.uniform(lo, hi))
    return (fixed, other, fixed, other) if half is not None else (other, fixed, other, fixed)


def _place_events(cfg: PixelConfig, rng: np.random.Generator, duration: float, n: int) -> list[Appearance]:
    """n events at random times: at most two on screen at once, a repeated item never overlapping itself."""
    events: list[Appearance] = []
    for _ in range(n):
        item = _pick_item(rng, [e.item for e in events], cfg)
        motion = list(MOTIONS)[int(rng.integers(len(MOTIONS)))]
        for _try in range(30):
            length = round(float(rng.uniform(cfg.min_event, cfg.max_event)), 2)
            start = round(float(rng.uniform(0, duration - length)), 2)
            probe = Appearance(*item, 0, start, start + length, motion, 0, 0, 0, 0)
            busy = [e for e in events if _overlap(e, probe) > 0]
            if len(busy) <= 1 and not any(e.item == item for e in busy):
                break
        else:
            continue  # no room: the video gets fewer events
        half = None if not busy else 1 - _half(busy[0])
        probe.x0, probe.y0, probe.x1, probe.y1 = _path(rng, motion, half)
        events.append(probe)
    events.sort(key=lambda e: e.start)
    return events


def _half(a: Appearance) -> int:
    """Which half (0: left/top, 1: right/bottom) an item keeps to along its fixed axis."""
    fixed = a.y0 if a.motion in ("left", "right") else a.x0
    return int(fixed >= 0.5)


def _distractors(
    cfg: PixelConfig, rng: np.random.Generator, duration: float, events: list[Appearance]
) -> list[Appearance]:
    """Brief static appearances of an item sharing the class or the colour of an event, never both."""
    out = []
    colours = list(COLOURS)
    for _ in range(int(rng.poisson(cfg.distractors_per_video))):
        cls, colour = events[int(rng.integers(len(events)))].item
        if rng.random() < 0.5:
            colour = colours[(colours.index(colour) + 1 + int(rng.integers(len(colours) - 1))) % len(colours)]
        else:
            cls = (cls + 1 + int(rng.integers(len(CLASSES) - 1))) % len(CLASSES)
        if any(e.item == (cls, colour) for e in events):
            continue
        length = round(float(rng.uniform(0.5, 1.25)), 2)
        start = round(float(rng.uniform(0, duration - length)), 2)
        x, y = (float(v) for v in rng.uniform(0.2, 0.8, size=2))
        out.append(Appearance(cls, colour, 0, start, start + length, None, x, y, x, y))
    return out


# --------------------------------------------------------------------------------------------- sentences
def resolve(events: list[Appearance], query: PixelQuery) -> list[int]:
    """The events the query's words can mean, computed from the script (a valid query has exactly one)."""
    item = events[query.event].item
    same = [i for i, e in enumerate(events) if e.item == item]
    if query.kind == "single":
        return same
    if query.kind == "ordinal":
        order = sorted(same, key=lambda i: events[i].start)
        return [order[query.ordinal - 1]] if 1 <= query.ordinal <= len(order) else []
    ref = events[query.reference]
    if sum(e.item == ref.item for e in events) != 1 or ref.item == item:
        return []  # the event named after after/before/while must itself be unique
    if query.kind == "after":
        return [i for i in same if events[i].start >= ref.end]
    if query.kind == "before":
        return [i for i in same if events[i].end <= ref.start]
    if query.kind == "while":
        return [i for i in same if _overlap(events[i], ref) > 0]
    raise ValueError(f"unknown query kind {query.kind!r}")


def _relational(events: list[Appearance], k: int) -> list[PixelQuery]:
    """Every after/before/while query about event k that picks out exactly k."""
    out = []
    for j, ref in enumerate(events):
        for kind in ("after", "before", "while"):
            query = PixelQuery(k, kind, "", reference=j)
            if kind == "while" and _overlap(events[k], ref) < 1.0:
                continue
            if resolve(events, query) == [k]:
                out.append(query)
    return out


def describe(event: Appearance, rng: np.random.Generator) -> str:
    phrases = MOTIONS[event.motion or "left"]
    return f"the {event.name()} {phrases[int(rng.integers(len(phrases)))]}"


def sentence(events: list[Appearance], query: PixelQuery, rng: np.random.Generator) -> str:
    """The words of a query (the grammar in the module docstring)."""
    head = describe(events[query.event], rng)
    if query.kind == "single":
        return f"{head}."
    if query.kind == "ordinal":
        return f"{head} for the {ORDINALS[query.ordinal - 1]} time."
    ref = events[query.reference].name()
    tail = {"after": "leaves", "before": "appears", "while": "is on screen"}[query.kind]
    return f"{head} {query.kind} the {ref} {tail}."


def _queries(cfg: PixelConfig, rng: np.random.Generator, events: list[Appearance]) -> list[PixelQuery]:
    """Up to queries_per_video checked queries, on distinct events first."""
    order = rng.permutation(len(events)).tolist()
    order = (order * cfg.queries_per_video)[: cfg.queries_per_video]
    out: list[PixelQuery] = []
    for k in order:
        twins = sorted(
            (i for i, e in enumerate(events) if e.item == events[k].item), key=lambda i: events[i].start
        )
        relational = _relational(events, k)
        if relational and rng.random() < cfg.relation_share:
            query = relational[int(rng.integers(len(relational)))]
        elif len(twins) == 1:
            query = PixelQuery(k, "single", "")
        else:
            query = PixelQuery(k, "ordinal", "", ordinal=twins.index(k) + 1)
        if resolve(events, query) != [k]:  # never written: every query picks out exactly one event
            continue
        query.sentence = sentence(events, query, rng)
        key = (query.event, query.kind, query.reference)
        if all((q.event, q.kind, q.reference) != key for q in out):
            out.append(query)
    return out


def make_scripts(cfg: PixelConfig, images: ImageSet) -> dict[str, list[PixelScript]]:
    """Every video of both splits: events, distractors, which image each shows, and checked queries."""
    scripts: dict[str, list[PixelScript]] = {"train": [], "test": []}
    width = max(4, len(str(cfg.n_train_videos + cfg.n_test_videos)))
    index = 0
    for split, n_videos in (("train", cfg.n_train_videos), ("test", cfg.n_test_videos)):
        _, per_class = images.pool(split)
        for _ in range(n_videos):
            rng = _rng(cfg.seed, index, 0)
            frames = int(
                rng.integers(
                    round(cfg.min_duration * cfg.video_fps), round(cfg.max_duration * cfg.video_fps) + 1
                )
            )
            duration = frames / cfg.video_fps
            events = _place_events(cfg, rng, duration, int(rng.integers(cfg.min_events, cfg.max_events + 1)))
            distractors = _distractors(cfg, rng, duration, events)
            for a in events + distractors:
                pool = per_class[a.cls]
                a.image = int(pool[int(rng.integers(len(pool)))])
            script = PixelScript(f"P{index:0{width}d}", split, index, duration, events, distractors)
            script.queries = _queries(cfg, rng, events)
            if script.queries:
                scripts[split].append(script)
            index += 1
    return scripts


def kind_shares(scripts: list[PixelScript]) -> dict[str, float]:
    """The share (%) of each query kind among a split's queries."""
    kinds = [q.kind for s in scripts for q in s.queries]
    return {kind: 100.0 * kinds.count(kind) / max(len(kinds), 1) for kind in QUERY_KINDS}
