"""The feature renderers of the synthetic benchmark: prototypes, the (T, D) features of a scripted
video (`render_video`, `render`) and the i3d feature style (`to_i3d_style`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emtm.data.synth.config import SynthConfig
from emtm.data.synth.grammar import ACTIONS, OBJECTS
from emtm.data.synth.scripts import VideoScript, _rng


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
