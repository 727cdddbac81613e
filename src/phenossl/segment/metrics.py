"""Score an instance segmentation against ground truth, the way nucleus benchmarks do (DSB 2018, stardist).

Objects are matched one-to-one by intersection over union (IoU). A predicted object and a true object
match when their IoU is at least ``iou_threshold``. Above 0.5 a true object can overlap at most one
prediction by that much, so the matching is unique; at 0.5 and below several candidates may compete,
and the Hungarian algorithm picks the assignment with the most matches (ties broken by total IoU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from phenossl.errors import ConfigError, InputError


@dataclass(frozen=True)
class InstanceScores:
    """Matching counts and the scores derived from them.

    Ratios whose denominator is zero are 0.0 (stardist's convention): an empty prediction on an
    empty ground truth scores 0 everywhere, so look at ``n_true`` / ``n_pred`` before reading them.
    """

    iou_threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    average_precision: float  # DSB / stardist "accuracy": tp / (tp + fp + fn)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def match_instances(
    gt_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> InstanceScores:
    """Match predicted objects to true objects one-to-one by IoU and count hits and misses.

    Labels need not be consecutive (0 is background). IoUs come from one sparse contingency table
    of (true label, predicted label) pixel pairs, so the cost grows with the pixel count, not with
    the number of object pairs.
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ConfigError(f"iou_threshold={iou_threshold!r} must be in (0, 1]; 0.5 is the usual choice.")
    gt = _as_label_image(gt_labels, "gt_labels")
    pred = _as_label_image(pred_labels, "pred_labels")
    if gt.shape != pred.shape:
        raise InputError(
            f"gt_labels has shape {gt.shape} but pred_labels has shape {pred.shape}; "
            "score a prediction against the ground truth of the same image."
        )
    iou = iou_matrix(gt, pred)
    n_true, n_pred = iou.shape
    matched_ious = _matched_ious(iou, float(iou_threshold))
    tp = int(matched_ious.size)
    fp, fn = n_pred - tp, n_true - tp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return InstanceScores(
        iou_threshold=float(iou_threshold),
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        mean_matched_iou=float(matched_ious.mean()) if tp else 0.0,
        average_precision=_ratio(tp, tp + fp + fn),
    )


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> sparse.csr_matrix:
    """Sparse (n_true, n_pred) IoU of every overlapping pair; objects are indexed in sorted label order."""
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    gt_index, pred_index = gt_index.ravel(), pred_index.ravel()
    intersections = sparse.coo_matrix(
        (np.ones(gt_index.size, dtype=np.int64), (gt_index, pred_index)),
        shape=(gt_ids.size, pred_ids.size),
    ).tocsr()  # duplicate (row, col) entries are summed: pixel counts per pair
    gt_areas = np.bincount(gt_index, minlength=gt_ids.size)
    pred_areas = np.bincount(pred_index, minlength=pred_ids.size)
    # drop the background row/column (label 0) where present
    keep_rows = np.flatnonzero(gt_ids != 0)
    keep_cols = np.flatnonzero(pred_ids != 0)
    intersections = intersections[keep_rows][:, keep_cols].tocoo()
    rows, cols, inter = intersections.row, intersections.col, intersections.data.astype(np.float64)
    union = gt_areas[keep_rows][rows] + pred_areas[keep_cols][cols] - inter
    return sparse.csr_matrix((inter / union, (rows, cols)), shape=(keep_rows.size, keep_cols.size))


def _matched_ious(iou: sparse.csr_matrix, threshold: float) -> np.ndarray:
    """IoUs of the one-to-one matched pairs."""
    candidates = iou.tocoo()
    good = candidates.data >= threshold
    rows, cols, values = candidates.row[good], candidates.col[good], candidates.data[good]
    if threshold > 0.5 or values.size == 0:
        return values  # each object takes part in at most one pair above 0.5
    row_ids, row_pos = np.unique(rows, return_inverse=True)
    col_ids, col_pos = np.unique(cols, return_inverse=True)
    dense = np.zeros((row_ids.size, col_ids.size))
    dense[row_pos, col_pos] = values
    # most matches first, then the largest total IoU (each IoU term is < 1/n, so it only breaks ties)
    cost = -(dense > 0).astype(np.float64) - dense / (2 * max(dense.shape))
    r, c = linear_sum_assignment(cost)
    matched = dense[r, c]
    return matched[matched > 0]


def _as_label_image(labels: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise InputError(
            f"{name} has dtype {array.dtype}; expected an integer label image (0 = background, "
            "1..n = objects). Convert masks with skimage.measure.label first."
        )
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise InputError(f"{name} contains negative labels ({array.min()}); labels must be >= 0.")
    return array


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0
