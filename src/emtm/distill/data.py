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

    def __init__(self, base: GroundingDataset, caches: list[TeacherCache]):
        self.base = base
        self.caches = caches
        self.samples = base.samples
        self.cfg = base.cfg
        for cache in caches:
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
        dists = [cache.get(sample_id) for cache in self.caches]
        n = len(item["video"])
        for cache, dist in zip(self.caches, dists):
            if dist.shape != (2, n):
                raise DataError(
                    f"{cache.path}: sample {sample_id} has {dist.shape[1]} clips, the data gives {n}; "
                    "the cache was built for another max_video_len or feature set: rebuild it"
                )
        item["teacher_dists"] = np.stack(dists)
        return item


def collate_with_teachers(items: list[dict], max_chars: int = 16) -> dict[str, torch.Tensor]:
    batch = collate(items, max_chars)
    b, length = batch["video_mask"].shape
    k = items[0]["teacher_dists"].shape[0]
    dists = torch.zeros(b, k, 2, length)
    for i, item in enumerate(items):
        n = item["teacher_dists"].shape[-1]
        dists[i, :, :, :n] = torch.from_numpy(np.asarray(item["teacher_dists"], dtype=np.float32))
    batch["teacher_dists"] = dists
    return batch
