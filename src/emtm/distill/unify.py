"""Unify heterogeneous teachers' native outputs into one form: start/end distributions on the student grid.

Every rule returns two float32 tensors (B, L) shaped like `dst_mask` (True on the L valid clips of each
sample, valid first): non-negative, summing to 1 over the valid clips, exactly 0 on padding, never NaN.

Grid convention. Clip i of a sample with L valid clips covers the fraction [i/L, (i+1)/L) of the video and a
span (i, j) means [i/L, (j+1)/L]. A start boundary at fraction s therefore belongs at the clip whose START
position i/L is s, and an end boundary at fraction e at the clip whose END position (i+1)/L is e. Densities
are evaluated (and distributions resampled) at those positions, so a teacher's best moment lands exactly on
the student's matching span: on an N grid, cell (i, j) goes to (i, j) when L = N and to (2i, 2j + 1) when
L = 2N.

Resampling. Growing a grid interpolates linearly between source points; shrinking it splits each source
point's mass between its two nearest destination points with the same linear weights (the adjoint of the
interpolation, i.e. the tent stretched to the coarser spacing), so no mass and no peak falls between samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from emtm.models.layers import masked_softmax

RULES = ("span", "2dmap", "proposals", "regression")
ALIGNS = ("corners", "start", "end")
_PAD_POS = 2.0  # padded grid points sit at positions >= 2, past every valid position in [0, 1]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _normalise(q: Tensor, mask: Tensor) -> Tensor:
    """Clamp to >= 0, zero padding, scale to sum 1 over valid clips; an all-zero row becomes uniform."""
    q = torch.where(mask, torch.nan_to_num(q.float(), nan=0.0).clamp_min(0.0), 0.0)
    peak = q.amax(1, keepdim=True)
    q = q / torch.where(peak > 0, peak, 1.0)  # rescale first so tiny (even subnormal) rows normalise exactly
    total = q.sum(1, keepdim=True)
    uniform = mask.float() / mask.sum(1, keepdim=True).clamp_min(1)
    return torch.where(total > 0, q / total.clamp_min(1.0), uniform)


def _dist_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Masked softmax in float32, made safe: a sample whose valid logits are all -inf becomes uniform."""
    return _normalise(masked_softmax(logits.float(), mask), mask)


def span_to_dist(
    start_logits: Tensor, end_logits: Tensor, mask: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Softmax of logits / T over the valid clips (the teacher's logits are already on this grid)."""
    _check_positive("temperature", temperature)
    mask = mask.bool()
    return (
        _dist_from_logits(start_logits.float() / temperature, mask),
        _dist_from_logits(end_logits.float() / temperature, mask),
    )


def _query_positions(mask: Tensor, align: str) -> Tensor:
    """(B, Lmax) positions of a grid's clips as fractions; padded clips sit past 1, keeping rows sorted."""
    k = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32).expand(mask.shape[0], -1)
    n = mask.sum(1, keepdim=True).float()
    if align == "corners":
        pos = k / (n - 1).clamp_min(1)
    elif align == "start":
        pos = k / n.clamp_min(1)
    else:
        pos = (k + 1) / n.clamp_min(1)
    return torch.where(mask, pos, _PAD_POS + k).contiguous()


def _source_points(p: Tensor, mask: Tensor, align: str) -> tuple[Tensor, Tensor, Tensor]:
    """Values, positions and mask of the points a distribution is resampled from.

    For "start"/"end" the n clips become n + 1 boundary points k/n (k = 0..n) with a zero at the boundary
    no moment can start (1) or end (0) at, so interpolation tapers past the last clip instead of clamping.
    """
    if align == "corners":
        return p, _query_positions(mask, "corners"), mask
    zero = p.new_zeros(p.shape[0], 1)
    values = torch.cat([p, zero], 1) if align == "start" else torch.cat([zero, p], 1)
    k = torch.arange(p.shape[1] + 1, device=p.device)
    point_mask = k.unsqueeze(0) <= mask.sum(1, keepdim=True)
    pos = torch.where(point_mask, k / mask.sum(1, keepdim=True).clamp_min(1), _PAD_POS + k)
    return values, pos.float().contiguous(), point_mask


def _bracket(grid: Tensor, grid_mask: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (lo, hi) of the valid grid points around each x and the weight of hi (clamped at the ends)."""
    last = (grid_mask.sum(1, keepdim=True) - 1).clamp_min(0)
    idx = torch.searchsorted(grid, x.contiguous())
    hi = torch.minimum(idx, last)
    lo = torch.minimum((idx - 1).clamp_min(0), last)
    x0, x1 = grid.gather(1, lo), grid.gather(1, hi)
    w = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return lo, hi, torch.where(hi > lo, w, 0.0)


def resample_dist(p: Tensor, src_mask: Tensor, dst_mask: Tensor, align: str = "corners") -> Tensor:
    """Per sample, a distribution over its n_src valid clips -> one over its n_dst valid clips.

    align="corners" follows F.interpolate(mode="linear", align_corners=True): clip k sits at k / (n - 1).
    align="start"/"end" put clip k at its start k/n or end (k + 1)/n (see the module docstring). When
    n_dst < n_src the mass is split rather than sampled, so peaks survive shrinking.
    """
    if align not in ALIGNS:
        raise ValueError(f"unknown align {align!r}; expected one of {ALIGNS}")
    src_mask, dst_mask = src_mask.bool(), dst_mask.bool()
    p = torch.where(src_mask, p.float(), 0.0)
    values, pos, point_mask = _source_points(p, src_mask, align)
    query = _query_positions(dst_mask, align)
    lo, hi, w = _bracket(pos, point_mask, query)  # grow: interpolate at the destination points
    grown = values.gather(1, lo) * (1 - w) + values.gather(1, hi) * w
    lo, hi, w = _bracket(query, dst_mask, pos)  # shrink: split each source point between its neighbours
    shrunk = torch.zeros_like(query).scatter_add(1, lo, values * (1 - w)).scatter_add(1, hi, values * w)
    shrink = dst_mask.sum(1, keepdim=True) < src_mask.sum(1, keepdim=True)
    return _normalise(torch.where(shrink, shrunk, grown), dst_mask)


def map_to_dist(
    scores: Tensor,
    map_mask: Tensor,
    dst_mask: Tensor,
    reduce: str = "sum",
    temperature: float = 1.0,
    scores_are_logits: bool | Tensor = False,
) -> tuple[Tensor, Tensor]:
    """A 2D map (B, N, N), cell (i, j) = moment [i/N, (j+1)/N] -> start/end distributions on the student grid.

    Softmax over the valid cells of logits / T (log(scores) / T for probabilities), then start over i is the
    sum (reduce="sum", the marginal) or max (reduce="max") over j, end over j likewise over i; both are
    then resampled from the N grid (starts at i/N, ends at (j+1)/N) onto each sample's L clips.
    """
    _check_positive("temperature", temperature)
    if reduce not in ("sum", "max"):
        raise ValueError(f"unknown map reduce {reduce!r}; expected 'sum' or 'max'")
    b, n, _ = scores.shape
    s = scores.float()
    is_logits = torch.as_tensor(scores_are_logits, device=s.device).bool().reshape(-1, 1, 1)
    logits = torch.where(is_logits, s, torch.log(s.clamp_min(1e-6)))
    cells = _dist_from_logits((logits / temperature).reshape(b, n * n), map_mask.bool().reshape(b, n * n))
    cells = cells.reshape(b, n, n)
    start, end = (cells.sum(2), cells.sum(1)) if reduce == "sum" else (cells.amax(2), cells.amax(1))
    grid = torch.ones(b, n, dtype=torch.bool, device=s.device)
    return (
        resample_dist(_normalise(start, grid), grid, dst_mask, align="start"),
        resample_dist(_normalise(end, grid), grid, dst_mask, align="end"),
    )


def _mixture_logits(positions: Tensor, centres: Tensor, log_w: Tensor, sigma: float) -> Tensor:
    """log sum_k w_k exp(-(x - c_k)^2 / (2 sigma^2)) at each position, computed stably in log space."""
    z = (positions.unsqueeze(2) - centres.unsqueeze(1)) / sigma
    return torch.logsumexp(log_w.unsqueeze(1) - 0.5 * z.square(), dim=2)


def proposals_to_dist(
    windows: Tensor, scores: Tensor, dst_mask: Tensor, sigma_frac: float = 0.05, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Scored windows (B, K, 2) as fractions -> a Gaussian mixture at each boundary on the student grid.

    Weights are the scores (>= 0) of the valid proposals normalised per sample (uniform when they are all
    0). Start at clip i is proportional to sum_k w_k N(i/L; s_k, sigma), end to sum_k w_k N((i+1)/L; e_k,
    sigma). The mixture is computed in log space, so a sigma far below 1/L still gives a valid distribution
    (a one-hot at the nearest clip) instead of underflowing.
    """
    _check_positive("sigma_frac", sigma_frac)
    dst_mask = dst_mask.bool()
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid.bool()
    w = torch.where(valid, torch.nan_to_num(scores.float(), nan=0.0).clamp_min(0.0), 0.0)
    total = w.sum(1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(1e-30), valid.float())  # uniform over valid proposals
    log_w = torch.log(w)  # -inf for invalid or zero-weight proposals; no valid proposal -> uniform below
    win = torch.nan_to_num(windows.float(), nan=0.0).clamp(0.0, 1.0)
    start = _mixture_logits(_query_positions(dst_mask, "start"), win[..., 0], log_w, sigma_frac)
    end = _mixture_logits(_query_positions(dst_mask, "end"), win[..., 1], log_w, sigma_frac)
    return _dist_from_logits(start, dst_mask), _dist_from_logits(end, dst_mask)


def regression_to_dist(window: Tensor, dst_mask: Tensor, sigma_frac: float = 0.05) -> tuple[Tensor, Tensor]:
    """One window (B, 2) as fractions -> a single Gaussian at each boundary (one proposal of weight 1)."""
    return proposals_to_dist(window.unsqueeze(1), window.new_ones(window.shape[0], 1), dst_mask, sigma_frac)


def unify(
    form: str,
    native: dict[str, Tensor],
    dst_mask: Tensor,
    temperature: float = 1.0,
    sigma_frac: float = 0.05,
    map_reduce: str = "sum",
    src_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A teacher's native output (keys per `GroundingModel`'s docstring) -> start/end distributions.

    For "span", src_mask is the teacher's clip grid; when it differs from dst_mask the distributions are
    resampled with clip starts/ends aligned. temperature applies to "span" and "2dmap", sigma_frac (a
    fraction of the video) to "proposals" and "regression".
    """
    dst_mask = dst_mask.bool()
    if form == "span":
        if src_mask is None or (src_mask.shape == dst_mask.shape and torch.equal(src_mask.bool(), dst_mask)):
            return span_to_dist(native["start_logits"], native["end_logits"], dst_mask, temperature)
        start, end = span_to_dist(native["start_logits"], native["end_logits"], src_mask.bool(), temperature)
        return resample_dist(start, src_mask, dst_mask, "start"), resample_dist(
            end, src_mask, dst_mask, "end"
        )
    if form == "2dmap":
        is_logits = native.get("map_is_logits", False)
        return map_to_dist(
            native["map_scores"], native["map_mask"], dst_mask, map_reduce, temperature, is_logits
        )
    if form == "proposals":
        return proposals_to_dist(
            native["windows"], native["scores"], dst_mask, sigma_frac, native.get("valid")
        )
    if form == "regression":
        return regression_to_dist(native["window"], dst_mask, sigma_frac)
    raise ValueError(f"unknown teacher output form {form!r}; expected one of {RULES}")
