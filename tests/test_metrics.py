"""Evaluator maths: temporal IoU, R@k@m, mIoU and NMS, with hand-computed values."""

import numpy as np
import pytest

from emtm.engine.metrics import THRESHOLDS, TOP_KS, grounding_metrics, temporal_iou, temporal_nms


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ([1.0, 3.0], [1.0, 3.0], 1.0),  # identical
        ([0.0, 1.0], [2.0, 3.0], 0.0),  # disjoint
        ([0.0, 2.0], [2.0, 4.0], 0.0),  # touching endpoints
        ([2.0, 3.0], [0.0, 4.0], 0.25),  # contained: 1 / 4
        ([0.0, 4.0], [2.0, 6.0], 1.0 / 3.0),  # partial: 2 / 6
        ([0.0, 7.0], [0.0, 10.0], 0.7),
        ([2.0, 2.0], [2.0, 2.0], 0.0),  # zero-length union
        ([2.0, 2.0], [0.0, 4.0], 0.0),  # zero-length window
    ],
)
def test_temporal_iou_cases(pred, gt, expected):
    iou = temporal_iou(np.array(pred), np.array(gt))
    assert iou.shape == ()
    assert iou == pytest.approx(expected, abs=0, rel=1e-15)
    assert temporal_iou(np.array(gt), np.array(pred)) == iou  # symmetric


def test_temporal_iou_broadcasts():
    preds = np.array([[0.0, 5.0], [0.0, 10.0], [20.0, 30.0]])[:, None, :]  # (3, 1, 2)
    gts = np.array([[0.0, 10.0], [5.0, 10.0]])[None, :, :]  # (1, 2, 2)
    expected = np.array([[0.5, 0.0], [1.0, 0.5], [0.0, 0.0]])
    out = temporal_iou(preds, gts)
    assert out.shape == (3, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)


def test_temporal_iou_rejects_bad_shape():
    with pytest.raises(ValueError):
        temporal_iou(np.zeros((2, 3)), np.zeros(2))


def _one(window, gt=(0.0, 10.0)):
    return grounding_metrics([np.array([window])], np.array([gt]))


def test_keys_and_types():
    out = _one([0.0, 10.0])
    expected_keys = {f"r{k}@{m}" for k in TOP_KS for m in THRESHOLDS}
    expected_keys |= {"miou", "map", "map@0.5", "map@0.75", "n_queries"}
    assert set(out) == expected_keys
    assert {"r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7"} <= set(out)
    assert out["n_queries"] == 1 and isinstance(out["n_queries"], int)
    assert all(v == 100.0 for k, v in out.items() if k != "n_queries")


@pytest.mark.parametrize(
    "window, hits",
    [
        ([0.0, 7.0], {0.3: True, 0.5: True, 0.7: True}),  # IoU exactly 0.7
        ([0.0, 5.0], {0.3: True, 0.5: True, 0.7: False}),  # IoU exactly 0.5
        ([0.0, 3.0], {0.3: True, 0.5: False, 0.7: False}),  # IoU exactly 0.3
        ([0.0, 2.0], {0.3: False, 0.5: False, 0.7: False}),
    ],
)
def test_threshold_is_inclusive(window, hits):
    out = _one(window)
    for m, hit in hits.items():
        assert out[f"r1@{m}"] == (100.0 if hit else 0.0)
        assert out[f"r5@{m}"] == out[f"r1@{m}"]


def test_r5_counts_a_hit_at_rank_three():
    windows = np.array([[20.0, 30.0], [40.0, 50.0], [0.0, 10.0], [60.0, 70.0]])
    out = grounding_metrics([windows], np.array([[0.0, 10.0]]))
    assert out["r1@0.3"] == out["r1@0.5"] == out["r1@0.7"] == 0.0
    assert out["r5@0.3"] == out["r5@0.5"] == out["r5@0.7"] == 100.0
    assert out["miou"] == 0.0


def test_r5_ignores_rank_six_and_handles_short_lists():
    late_hit = np.array([[20.0, 30.0]] * 5 + [[0.0, 10.0]])  # the hit is 6th
    short = np.array([[0.0, 5.0], [20.0, 30.0]])  # 2 windows, the first hits at 0.5
    out = grounding_metrics([late_hit, short], np.array([[0.0, 10.0], [0.0, 10.0]]))
    assert out["r5@0.5"] == 50.0 and out["r5@0.7"] == 0.0
    assert out["r1@0.5"] == 50.0
    assert out["miou"] == 25.0  # (0 + 0.5) / 2


def test_miou_and_rates_over_queries():
    predictions = [
        np.array([[0.0, 5.0]]),  # IoU 0.5 with [0, 10]
        np.array([[0.0, 1.0]]),  # IoU 0.25 with [0, 4]
        np.array([[1.0, 3.0]]),  # IoU 1 with [1, 3]
        np.array([[5.0, 6.0]]),  # IoU 0 with [0, 4]
    ]
    gt = np.array([[0.0, 10.0], [0.0, 4.0], [1.0, 3.0], [0.0, 4.0]])
    out = grounding_metrics(predictions, gt)
    assert out["miou"] == pytest.approx(43.75)  # (0.5 + 0.25 + 1 + 0) / 4
    assert out["r1@0.3"] == 50.0 and out["r1@0.5"] == 50.0 and out["r1@0.7"] == 25.0
    assert out["n_queries"] == 4


def test_custom_thresholds_and_ks():
    out = grounding_metrics([np.array([[0.0, 1.0], [0.0, 10.0]])], np.array([[0.0, 10.0]]), (0.9,), (2,))
    # the hit is at rank 2: precision 1/2 at recall 1, so AP = 0.5 at every threshold
    maps = {"map": 50.0, "map@0.5": 50.0, "map@0.75": 50.0}
    assert out == {"r2@0.9": 100.0, "miou": 10.0, "n_queries": 1} | maps


@pytest.mark.parametrize(
    "predictions, gt",
    [
        ([np.zeros((1, 2))], np.zeros((2, 2))),  # count mismatch
        ([], np.zeros((0, 2))),  # no queries
        ([np.zeros((0, 2))], np.zeros((1, 2))),  # no window
        ([np.zeros((1, 3))], np.zeros((1, 2))),  # bad window shape
        ([np.zeros((1, 2))], np.zeros((1, 3))),  # bad gt shape
    ],
)
def test_grounding_metrics_rejects_bad_input(predictions, gt):
    with pytest.raises(ValueError):
        grounding_metrics(predictions, gt)


def test_nms_hand_case():
    windows = np.array([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 5.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # IoU with window 0: #1 9/11 (dropped), #2 0, #3 5/10 = 0.5 (kept: only IoU > threshold drops)
    np.testing.assert_array_equal(temporal_nms(windows, scores, 0.5), [0, 2, 3])
    np.testing.assert_array_equal(temporal_nms(windows, scores, 0.4), [0, 2])
    np.testing.assert_array_equal(temporal_nms(windows, scores, 0.5, top_k=2), [0, 2])
    np.testing.assert_array_equal(temporal_nms(windows, scores, 1.0), [0, 1, 2, 3])


def test_nms_orders_by_score_and_breaks_ties_by_index():
    disjoint = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_array_equal(temporal_nms(disjoint, np.array([0.1, 0.9, 0.5]), 0.5), [1, 2, 0])
    np.testing.assert_array_equal(temporal_nms(disjoint, np.array([0.5, 0.5, 0.5]), 0.5), [0, 1, 2])
    same = np.array([[0.0, 1.0]] * 3)
    np.testing.assert_array_equal(temporal_nms(same, np.array([0.5, 0.7, 0.7]), 0.5), [1])


def test_nms_empty_and_bad_input():
    out = temporal_nms(np.zeros((0, 2)), np.zeros(0), 0.5)
    assert out.shape == (0,) and out.dtype == np.int64
    with pytest.raises(ValueError):
        temporal_nms(np.zeros((2, 2)), np.zeros(3), 0.5)
    with pytest.raises(ValueError):
        temporal_nms(np.zeros((2, 2)), np.zeros(2), 0.5, top_k=0)


def test_top1_ious_are_the_values_behind_r1_and_miou():
    from emtm.engine.metrics import top1_ious

    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 20, size=(40, 5))
    preds = [np.stack([s, s + rng.uniform(1, 10, size=5)], axis=1) for s in starts]
    gts = [np.array([[5.0, 12.0]]), *(np.array([[3.0, 9.0], [10.0, 18.0]]) for _ in range(39))]
    ious = top1_ious(preds, gts)
    metrics = grounding_metrics(preds, gts)
    assert ious.shape == (40,) and ious.mean() * 100 == pytest.approx(metrics["miou"])
    for m in THRESHOLDS:
        assert np.mean(ious >= m) * 100 == pytest.approx(metrics[f"r1@{m}"])
    assert ious[1] == pytest.approx(temporal_iou(preds[1][0], gts[1]).max())  # the better of two windows
    with pytest.raises(ValueError, match="one prediction per query"):
        top1_ious(preds[:3], gts)
