r"""Long videos: sliding windows against mean-pooling (docs/API.md, "Long videos").

Each of the first --videos test videos of a synthetic benchmark (1 clip per second) is placed last
after randomly drawn other test videos (seeded) to make a video of about --length clips; its queries
are grounded with sliding windows, with mean-pooling (`resample`), and in the video alone.

    python benchmarks/long_video.py --run runs/demo/student_alone --data data/synth-demo \
        --videos 100 --length 300 --out runs/bench/long-300

Writes long_video.json and long_video.md (R1@0.5, R5@0.5 and mIoU, in %).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from emtm import Grounder
from emtm.engine.metrics import temporal_iou
from emtm.io import write_json, write_markdown_table


def scores(moments, truth: np.ndarray, stats: dict, mode: str) -> None:
    ious = [float(temporal_iou(np.array([m.start, m.end]), truth)) for m in moments]
    stats[mode, "r1@0.5"].append(ious[0] >= 0.5)
    stats[mode, "r5@0.5"].append(max(ious) >= 0.5)
    stats[mode, "miou"].append(ious[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a trained run or model folder")
    p.add_argument("--data", required=True, help="a synthetic benchmark folder (test.txt, features/)")
    p.add_argument("--videos", type=int, default=100)
    p.add_argument("--length", type=int, default=300, help="clips of each long video")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data = Path(args.data)
    g = Grounder.load(args.run, device="cpu")
    queries = defaultdict(list)
    for line in (data / "test.txt").open(encoding="utf-8"):
        head, sentence = line.strip().split("##")
        vid, s, e = head.split()
        queries[vid].append((sentence, float(s), float(e)))
    ids = list(queries)
    feats = {v: np.load(data / "features" / f"{v}.npy") for v in ids}
    rng = np.random.default_rng(0)
    stats: dict = defaultdict(list)
    for vid in ids[: args.videos]:
        parts, total = [], 0
        while total < args.length - len(feats[vid]):
            other = ids[rng.integers(len(ids))]
            if other != vid:
                parts.append(feats[other])
                total += len(feats[other])
        video = np.concatenate([*parts, feats[vid]])
        sentences = [q[0] for q in queries[vid]]
        for mode in ("window", "resample"):
            found = g.encode_video(video, float(len(video)), long_video=mode).ground_many(sentences, top_k=5)
            for moments, (_, s, e) in zip(found, queries[vid]):
                scores(moments, np.array([total + s, total + e]), stats, mode)
        alone = g.encode_video(feats[vid], float(len(feats[vid]))).ground_many(sentences, top_k=5)
        for moments, (_, s, e) in zip(alone, queries[vid]):
            scores(moments, np.array([s, e]), stats, "alone")
    result = {
        mode: {key: round(100 * float(np.mean(stats[mode, key])), 2) for key in ("r1@0.5", "r5@0.5", "miou")}
        for mode in ("alone", "window", "resample")
    }
    result["n_queries"] = len(stats["alone", "miou"])
    title = f"{result['n_queries']} queries, each video placed last in a ~{args.length}-clip video"
    rows = [[mode, *result[mode].values()] for mode in ("alone", "window", "resample")]
    write_json(Path(args.out) / "long_video.json", result)
    write_markdown_table(Path(args.out) / "long_video.md", ["mode", "R1@0.5", "R5@0.5", "mIoU"], rows, title)
    print(title)
    for row in rows:
        print(*row)


if __name__ == "__main__":
    main()
