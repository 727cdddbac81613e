"""match_instances on label images small enough to score by hand."""

from __future__ import annotations

import numpy as np
import pytest

from phenossl.errors import ConfigError, InputError
from phenossl.segment import match_instances


def squares_case() -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: A (16 px), B (16 px), C (4 px, label 5). Prediction: A exactly, half of B, one extra.

    IoUs: A 16/16 = 1, B 8/16 = 0.5, C unmatched; the extra object overlaps nothing.
    """
    gt = np.zeros((10, 10), dtype=np.uint16)
    gt[0:4, 0:4] = 1
    gt[0:4, 6:10] = 2
    gt[6:8, 6:8] = 5  # labels need not be consecutive
    pred = np.zeros((10, 10), dtype=np.int32)
    pred[0:4, 0:4] = 7
    pred[0:4, 6:8] = 3
    pred[8:10, 0:2] = 9
    return gt, pred


def test_counts_and_scores_match_the_hand_computation():
    gt, pred = squares_case()
    scores = match_instances(gt, pred, iou_threshold=0.5)
    assert (scores.n_true, scores.n_pred, scores.tp, scores.fp, scores.fn) == (3, 3, 2, 1, 1)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores.average_precision == pytest.approx(2 / (2 + 1 + 1))  # DSB "AP": tp / (tp + fp + fn)
    assert scores.mean_matched_iou == pytest.approx((1.0 + 0.5) / 2)


def test_an_iou_of_exactly_the_threshold_matches_and_a_stricter_threshold_drops_it():
    gt, pred = squares_case()
    strict = match_instances(gt, pred, iou_threshold=0.6)  # B's 0.5 no longer counts
    assert (strict.tp, strict.fp, strict.fn) == (1, 2, 2)
    assert strict.f1 == pytest.approx(2 / (2 + 2 + 2))
    assert strict.average_precision == pytest.approx(1 / 5)
    assert strict.mean_matched_iou == pytest.approx(1.0)


def test_perfect_prediction_scores_one_whatever_its_label_numbers():
    gt, _ = squares_case()
    permuted = np.zeros_like(gt, dtype=np.int64)
    for new, old in zip((40, 3, 11), (1, 2, 5), strict=True):
        permuted[gt == old] = new
    scores = match_instances(gt, permuted)
    assert (scores.tp, scores.fp, scores.fn) == (3, 0, 0)
    assert scores.precision == scores.recall == scores.f1 == scores.average_precision == 1.0
    assert scores.mean_matched_iou == 1.0


def test_one_prediction_covering_two_nuclei_matches_at_most_one_of_them():
    gt = np.zeros((4, 8), dtype=np.uint8)
    gt[:, :4], gt[:, 4:] = 1, 2
    merged = np.ones_like(gt)  # IoU with each true nucleus: 16 / 32 = 0.5
    scores = match_instances(gt, merged, iou_threshold=0.5)
    assert (scores.tp, scores.fp, scores.fn) == (1, 0, 1)


def test_low_thresholds_find_the_assignment_with_the_most_matches_not_the_greedy_one():
    # one row of pixels: G1 = [0, 10), G2 = [10, 14); P1 = [4, 14), P2 = [0, 4)
    # IoU(G1, P1) = 6/14 = 0.43 (the best single pair), IoU(G2, P1) = 4/10, IoU(G1, P2) = 4/10
    gt = np.zeros((1, 14), dtype=np.int32)
    gt[0, :10], gt[0, 10:] = 1, 2
    pred = np.zeros((1, 14), dtype=np.int32)
    pred[0, 4:], pred[0, :4] = 1, 2
    scores = match_instances(gt, pred, iou_threshold=0.4)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0)  # G1-P2 and G2-P1; greedy would stop at 1
    assert scores.mean_matched_iou == pytest.approx(0.4)
    only_best = match_instances(gt, pred, iou_threshold=0.42)
    assert (only_best.tp, only_best.fp, only_best.fn) == (1, 1, 1)
    assert only_best.mean_matched_iou == pytest.approx(6 / 14)


def test_empty_images_score_zero_and_report_their_counts():
    empty = np.zeros((6, 6), dtype=np.uint8)
    two = empty.copy()
    two[0:2, 0:2], two[4:6, 4:6] = 1, 2

    nothing = match_instances(empty, empty)
    assert (nothing.n_true, nothing.n_pred, nothing.tp, nothing.fp, nothing.fn) == (0, 0, 0, 0, 0)
    assert nothing.f1 == nothing.average_precision == nothing.precision == nothing.recall == 0.0

    all_false = match_instances(empty, two)
    assert (all_false.tp, all_false.fp, all_false.fn) == (0, 2, 0)
    assert all_false.precision == all_false.f1 == all_false.average_precision == 0.0

    all_missed = match_instances(two, empty)
    assert (all_missed.tp, all_missed.fp, all_missed.fn) == (0, 0, 2)
    assert all_missed.recall == all_missed.f1 == all_missed.average_precision == 0.0
    assert all_missed.mean_matched_iou == 0.0


def test_boolean_masks_are_one_object_each_and_scores_convert_to_a_dict():
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:4, 1:4] = True
    scores = match_instances(mask, mask.astype(np.uint8) * 3)
    assert scores.as_dict()["tp"] == 1 and scores.as_dict()["f1"] == 1.0


@pytest.mark.parametrize(
    ("gt", "pred", "words"),
    [
        (np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32), ["(4, 4)", "(4, 5)"]),
        (
            np.zeros((4, 4), np.float32),
            np.zeros((4, 4), np.int32),
            ["gt_labels", "float32", "skimage.measure.label"],
        ),
        (np.zeros((4, 4), np.int32), np.full((4, 4), -1, np.int32), ["pred_labels", "negative", "-1"]),
    ],
)
def test_unusable_label_images_are_input_errors_that_say_what_is_wrong(gt, pred, words):
    with pytest.raises(InputError) as error:
        match_instances(gt, pred)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_iou_threshold_outside_zero_to_one_is_a_config_error(threshold):
    labels = np.ones((3, 3), np.int32)
    with pytest.raises(ConfigError, match=r"iou_threshold=.* \(0, 1\]"):
        match_instances(labels, labels, iou_threshold=threshold)
