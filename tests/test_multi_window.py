"""Several ground-truth windows per query: R1/R5/mIoU against the best-matching window, mAP against all.

The reference below writes out the public Moment-DETR / Lighthouse standalone evaluator's definitions
from first principles (its structure: top-1 against the max-IoU window; per query, predictions sorted by
score, each matched to the unmatched window of highest IoU, all-point interpolated AP); emtm's
vectorised metrics must give the same numbers. The hand-computed cases fix the values themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emtm.cli import main
from emtm.data.annotations import read_annotations
from emtm.engine.evaluate import SplitPredictions, evaluation_report, score_predictions
from emtm.engine.metrics import MAP_THRESHOLDS, grounding_metrics


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def reference_ap(gt: list[list[float]], preds: list[list[float]], threshold: float) -> float:
    """ActivityNet detection AP of one query, as a loop: sort by score, greedy one-to-one matching."""
    preds = sorted(preds[:10], key=lambda p: -p[2])  # the first 10 windows, by score (stable)
    locked = [False] * len(gt)
    tp, fp = [], []
    for p in preds:
        order = sorted(range(len(gt)), key=lambda j: -iou(p, gt[j]))
        hit = False
        for j in order:
            if iou(p, gt[j]) < threshold:
                break
            if locked[j]:
                continue
            locked[j], hit = True, True
            break
        tp.append(1.0 if hit else 0.0)
        fp.append(0.0 if hit else 1.0)
    tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
    recall = tp_sum / len(gt)
    precision = tp_sum / (tp_sum + fp_sum)
    mprec = np.hstack([[0.0], precision, [0.0]])
    mrec = np.hstack([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def reference(gts: list[list[list[float]]], preds: list[list[list[float]]]) -> dict[str, float]:
    """R1@m (top-1 window against the gt window of max IoU), its mIoU, and mAP, in percent."""
    top1 = [max(iou(p[0], g) for g in gt) for gt, p in zip(gts, preds)]
    out = {f"r1@{m}": 100.0 * float(np.mean([x >= m for x in top1])) for m in (0.3, 0.5, 0.7)}
    out["miou"] = 100.0 * float(np.mean(top1))
    aps = np.array([[reference_ap(gt, p, t) for t in MAP_THRESHOLDS] for gt, p in zip(gts, preds)])
    out["map"], out["map@0.5"], out["map@0.75"] = (
        100 * aps.mean(),
        100 * aps[:, 0].mean(),
        100 * aps[:, 5].mean(),
    )
    return out


def emtm(gts: list[list[list[float]]], preds: list[list[list[float]]]) -> dict[str, float]:
    windows = [np.array(p)[:, :2] for p in preds]
    return grounding_metrics(windows, [np.array(g) for g in gts], scores=[np.array(p)[:, 2] for p in preds])


def test_hand_computed_cases() -> None:
    # q1: two gt windows; rank 1 hits the second (IoU 0.9), rank 2 the first (IoU 0.5), rank 3 nothing.
    #   AP: t = 0.5 -> both hits, precision 1, 1 -> 1; 0.55 <= t <= 0.9 -> rank 1 only -> 1/2; 0.95 -> 0.
    #   mAP = (1 + 8 x 0.5 + 0) / 10 = 0.5
    q1 = ([[0, 10], [20, 30]], [[21, 30, 0.9], [0, 5, 0.5], [40, 50, 0.1]])
    # q2: one window; IoU 0 at rank 1, 0.9 at rank 2, 1.0 at rank 3: AP = 1/2 up to t = 0.9, 1/3 at 0.95.
    q2 = ([[10, 20]], [[0, 5, 0.9], [10, 19, 0.8], [10, 20, 0.7]])
    # q3: the same window twice; the first takes gt [0, 10] (IoU 1), the second takes [0, 12] (IoU 10/12)
    #   for t <= 0.8 (AP 1), and is a false positive for t >= 0.85 (AP 1/2): mAP = (7 + 3 x 0.5) / 10.
    q3 = ([[0, 10], [0, 12]], [[0, 10, 0.9], [0, 10, 0.8]])
    # q4: scores rank [10, 20] first for mAP (AP 1), but the top-1 window is the file's first, [0, 5].
    q4 = ([[10, 20]], [[0, 5, 0.1], [10, 20, 0.9]])
    cases = {"q1": (q1, 0.9, 0.5, 100.0, 50.0), "q2": (q2, 0.0, (9 * 0.5 + 1 / 3) / 10, 50.0, 50.0)}
    cases |= {"q3": (q3, 1.0, 0.85, 100.0, 100.0), "q4": (q4, 0.0, 1.0, 100.0, 100.0)}
    for name, ((gt, pred), top1_iou, mean_ap, ap50, ap75) in cases.items():
        out = emtm([gt], [pred])
        assert out["miou"] == pytest.approx(100 * top1_iou), name
        assert out["map"] == pytest.approx(100 * mean_ap), name
        assert (out["map@0.5"], out["map@0.75"]) == pytest.approx((ap50, ap75)), name
        assert out == pytest.approx({**out, **reference([gt], [pred])}), name
    both = emtm([q1[0], q2[0]], [q1[1], q2[1]])
    assert both["r1@0.7"] == 50.0 and both["r5@0.7"] == 100.0  # q1's top-1 hits the second gt window


def test_agrees_with_the_public_definitions_on_random_queries() -> None:
    rng = np.random.default_rng(7)
    gts, preds = [], []
    for _ in range(200):
        duration = float(rng.uniform(20, 200))
        gt = []
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(0, duration - 2))
            gt.append([s, float(min(duration, s + rng.uniform(1, 60)))])
        pred = []
        for _ in range(int(rng.integers(1, 13))):  # more than 10 at times: only the first 10 count
            if rng.random() < 0.5:  # near a gt window, so there are hits at every threshold
                s, e = gt[int(rng.integers(len(gt)))]
                s, e = s + rng.normal(0, 1), e + rng.normal(0, 1)
            else:
                s = rng.uniform(0, duration - 1)
                e = s + rng.uniform(0.5, 50)
            pred.append([float(min(s, e)), float(max(s, e)), float(rng.choice([0.1, 0.5, rng.random()]))])
        gts.append(gt)
        preds.append(pred)
    ours, theirs = emtm(gts, preds), reference(gts, preds)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < ours["map"] < ours["map@0.5"] < 100


def test_one_window_per_query_gives_the_single_window_numbers() -> None:
    """(N, 2) ground truth (the single-window call) and its windows as (1, 2) arrays agree exactly, and
    R@k / mIoU equal the single-window definitions written out here."""
    rng = np.random.default_rng(3)
    gt = np.sort(rng.uniform(0, 30, size=(100, 2)), axis=1)
    preds = [np.sort(rng.uniform(0, 30, size=(int(rng.integers(1, 7)), 2)), axis=1) for _ in range(100)]
    single = grounding_metrics(preds, gt)
    assert grounding_metrics(preds, [g[None, :] for g in gt]) == single
    ious = [[iou(list(w), list(g)) for w in p] for p, g in zip(preds, gt)]
    for k in (1, 5):
        for m in (0.3, 0.5, 0.7):
            assert single[f"r{k}@{m}"] == 100 * np.mean([max(x[:k]) >= m for x in ious])
    assert single["miou"] == pytest.approx(100 * np.mean([x[0] for x in ious]), abs=1e-12)


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GT = [
    {"qid": 1, "query": "a", "vid": "v1", "duration": 40.0, "relevant_windows": [[0, 10], [20, 30]]},
    {"qid": 2, "query": "b", "vid": "v1", "duration": 40.0, "relevant_windows": [[10, 20]]},
    {
        "qid": 3,
        "query": "c",
        "vid": "v2",
        "duration": 20.0,
        "relevant_windows": [[12, 26]],
    },  # end clipped to 20
]
PREDS = [
    {"qid": 1, "pred_relevant_windows": [[21, 30, 0.9], [0, 5, 0.5], [40, 50, 0.1]]},
    {"qid": 2, "pred_relevant_windows": [[0, 5, 0.9], [10, 19, 0.8], [10, 20, 0.7]]},
    {"qid": 3, "pred_relevant_windows": [[12, 20, 0.9]]},
]


def test_evaluate_a_prediction_file_against_a_jsonl_ground_truth(tmp_path: Path, capsys) -> None:
    """`emtm evaluate --preds P --gt G.jsonl`: no data.yaml, every window of G, the clipped end reported."""
    gt, preds = _write(tmp_path / "gt.jsonl", GT), _write(tmp_path / "preds.jsonl", PREDS)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--preds", str(preds), "--gt", str(gt), "--json", str(out), "--breakdown"]) == 0
    printed = capsys.readouterr().out
    assert "ground truth: 1 of 4 windows end past the video's duration and were clipped to it" in printed
    assert "short (<= 10 s)" in printed and "short (< 1/3 video)" in printed
    metrics = json.loads(out.read_text())
    # q1 top-1 IoU 0.9 (the second window), q2 0, q3 1 (against [12, 20], the clipped window)
    assert metrics["r1@0.7"] == pytest.approx(200 / 3) and metrics["miou"] == pytest.approx(190 / 3)
    assert metrics["map"] == pytest.approx(100 * (0.5 + (9 * 0.5 + 1 / 3) / 10 + 1.0) / 3)
    assert (metrics["n_gt_windows"], metrics["n_gt_ends_clipped"], metrics["gt"]) == (4, 1, str(gt))
    # the public evaluator's buckets, by window length: q1 (10 s, 10 s) short; q2 10 s short; q3 8 s short
    assert (
        metrics["breakdown_seconds"]["short"]["n_queries"] == 3
        and "middle" not in metrics["breakdown_seconds"]
    )
    # relative to the video: q1 10/40, q2 10/40 and q3 8/20 -> short, short, medium
    assert {k: v["n_queries"] for k, v in metrics["breakdown"].items()} == {"short": 2, "medium": 1}


def test_a_bucket_scores_a_query_against_its_windows_in_the_bucket(tmp_path: Path) -> None:
    gt = [{"qid": 1, "query": "a", "vid": "v", "duration": 60.0, "relevant_windows": [[0, 5], [10, 30]]}]
    samples, _ = read_annotations(_write(tmp_path / "gt.jsonl", gt), "jsonl")
    preds = SplitPredictions(
        [np.array([[10.0, 30.0]])], [np.array([1.0])], samples, np.zeros(1, dtype=np.int64)
    )
    report = evaluation_report(preds, breakdown=True)
    assert report["miou"] == 100.0 == score_predictions(preds)["miou"]
    by_seconds = report["breakdown_seconds"]
    assert by_seconds["short"]["miou"] == 0.0 and by_seconds["middle"]["miou"] == 100.0  # [0, 5] vs [10, 30]
    assert "long" not in by_seconds and list(report["breakdown"]) == ["short", "medium"]  # 5/60 and 20/60
