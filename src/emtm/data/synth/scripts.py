"""Video scripts of the synthetic benchmark: what happens in each video (events, durations) and the
queries about it (sentences and annotated moments), without features."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from emtm.data.records import Sample
from emtm.data.synth.config import SynthConfig
from emtm.data.synth.grammar import ACTIONS, ORDINALS, compatible_pairs, make_sentence, verb_phrases
from emtm.errors import ConfigError


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


def script_samples(scripts: Iterable[VideoScript]) -> list[Sample]:
    samples = []
    for script in scripts:
        for k, q in enumerate(script.queries):
            sample_id = f"{script.video_id}_{k}"
            samples.append(Sample(sample_id, script.video_id, script.duration, q.start, q.end, q.sentence))
    return samples
