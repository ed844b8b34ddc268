"""The real-pixel benchmark's frame renderer: the (n, S, S, 3) uint8 frames of a scripted video
(`render_frames`) over a panning, flickering texture."""

from __future__ import annotations

import numpy as np

from emtm.data.pixels.images import ImageSet
from emtm.data.pixels.scenes import COLOURS, PixelConfig, PixelScript, _rng


def _background(cfg: PixelConfig, rng: np.random.Generator) -> np.ndarray:
    """A (2S, 2S, 3) float texture: two colours mixed by smooth noise, plus fine grain."""
    size = 2 * cfg.frame_size
    coarse = rng.random((9, 9))
    ys = np.linspace(0, 8, size)
    y0 = np.floor(ys).astype(int).clip(0, 7)
    fy = (ys - y0)[:, None]
    rows = coarse[y0] * (1 - fy) + coarse[y0 + 1] * fy  # (size, 9) bilinear in y
    mix = rows[:, y0] * (1 - fy.T) + rows[:, y0 + 1] * fy.T  # then in x
    mix = (mix - mix.min()) / max(float(np.ptp(mix)), 1e-6)
    c1, c2 = rng.uniform(20, 140, size=(2, 3))
    grain = rng.normal(0, 6, (size, size, 1))
    return (c1 * mix[..., None] + c2 * (1 - mix[..., None]) + grain).astype(np.float32)


def _item_patch(image: np.ndarray, px: int) -> np.ndarray:
    """A 28x28 image resized to px x px (bilinear), as alpha in [0, 1]."""
    src = image.astype(np.float32) / 255.0
    coords = (np.arange(px) + 0.5) * (28 / px) - 0.5
    i0 = np.floor(coords).astype(int).clip(0, 26)
    f = (coords - i0).clip(0, 1)
    rows = src[i0] * (1 - f[:, None]) + src[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f[None, :]) + rows[:, i0 + 1] * f[None, :]


def _paste(frame: np.ndarray, alpha: np.ndarray, colour: np.ndarray, cx: float, cy: float) -> None:
    size, px = frame.shape[0], alpha.shape[0]
    x0, y0 = int(round(cx * size - px / 2)), int(round(cy * size - px / 2))
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + px, size), min(y0 + px, size)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0, None]
    region = frame[fy0:fy1, fx0:fx1]
    region *= 1 - a
    region += a * colour


def render_frames(cfg: PixelConfig, script: PixelScript, images: ImageSet) -> np.ndarray:
    """The (n, S, S, 3) uint8 frames of one video, frame i showing time (i + 0.5) / video_fps."""
    rng = _rng(cfg.seed, script.index, 1)
    pool, _ = images.pool(script.split)
    texture = _background(cfg, rng)
    size = cfg.frame_size
    n = int(round(script.duration * cfg.video_fps))
    pan = rng.uniform(-1, 1, size=2) * size / script.duration  # px per second
    origin = rng.uniform(0, size, size=2)
    flicker_period, flicker_phase = rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    base = 28 * cfg.item_scale
    for i in range(n):
        t = (i + 0.5) / cfg.video_fps
        ox, oy = ((origin + pan * t) % size).astype(int)
        frame = texture[oy : oy + size, ox : ox + size].copy()
        frame *= 1 + 0.15 * np.sin(2 * np.pi * t / flicker_period + flicker_phase)
        for a in sorted(script.events + script.distractors, key=lambda a: a.start):
            if not a.start <= t < a.end:
                continue
            progress = (t - a.start) / (a.end - a.start)
            fade = min(1.0, (t - a.start) / cfg.fade, (a.end - t) / cfg.fade)
            scale = {"grow": 0.7 + 0.8 * progress, "shrink": 1.5 - 0.8 * progress}.get(a.motion or "", 1.0)
            px = max(4, int(round(base * scale)))
            alpha = _item_patch(pool[a.image], px) * fade
            cx, cy = a.x0 + (a.x1 - a.x0) * progress, a.y0 + (a.y1 - a.y0) * progress
            _paste(frame, alpha, np.asarray(COLOURS[a.colour], dtype=np.float32), cx, cy)
        frames[i] = frame.clip(0, 255).astype(np.uint8)
    return frames
