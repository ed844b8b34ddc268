"""Batches for distillation: each query's cached teacher distributions ride along with its features."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from emtm.data.dataset import GroundingDataset, collate
from emtm.distill.cache import TeacherCache
from emtm.errors import DataError


class TeacherDataset(Dataset):
    """A GroundingDataset whose items also carry "teacher_dists": (K, 2, n) for the item's n clips."""

    def __init__(
        self, base: GroundingDataset, caches: list[TeacherCache], kau_caches: list[TeacherCache] | None = None
    ):
        self.base = base
        self.caches = caches
        self.kau_caches = kau_caches or []  # cross-fitting: out-of-fold outputs for the KAU, "kau_dists"
        self.samples = base.samples
        self.cfg = base.cfg
        for cache in caches + self.kau_caches:
            missing = [s.sample_id for s in base.samples if s.sample_id not in cache]
            if missing:
                raise DataError(
                    f"{cache.path}: no teacher outputs for {len(missing)} of {len(base.samples)} training "
                    f"queries (e.g. {missing[:3]}); rebuild it with `emtm teachers export` on this data"
                )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        sample_id = self.samples[index].sample_id
        n = len(item["video"])
        item["teacher_dists"] = self._stack(self.caches, sample_id, n)
        if self.kau_caches:
            item["kau_dists"] = self._stack(self.kau_caches, sample_id, n)
        return item

    @staticmethod
    def _stack(caches: list[TeacherCache], sample_id: str, n: int) -> np.ndarray:
        dists = [cache.get(sample_id) for cache in caches]
        for cache, dist in zip(caches, dists):
            if dist.shape != (2, n):
                raise DataError(
                    f"{cache.path}: sample {sample_id} has {dist.shape[1]} clips, the data gives {n}; "
                    "the cache was built for another max_video_len or feature set: rebuild it"
                )
        return np.stack(dists)


def collate_with_teachers(items: list[dict], max_chars: int = 16) -> dict[str, torch.Tensor]:
    batch = collate(items, max_chars)
    b, length = batch["video_mask"].shape
    for key in ("teacher_dists", "kau_dists"):
        if key not in items[0]:
            continue
        k = items[0][key].shape[0]
        dists = torch.zeros(b, k, 2, length)
        for i, item in enumerate(items):
            n = item[key].shape[-1]
            dists[i, :, :, :n] = torch.from_numpy(np.asarray(item[key], dtype=np.float32))
        batch[key] = dists
    return batch
