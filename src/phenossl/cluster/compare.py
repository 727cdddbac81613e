"""Compare two clusterings of the same cells: do they agree, which cluster became which, who moved?

Cluster ids are arbitrary, so run B's clusters are first matched one-to-one to run A's by the
Hungarian algorithm on the contingency table (maximising the cells kept together); a cell "changed"
when its B cluster is not the match of its A cluster. With different k, the clusters left without a
partner count all their cells as changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenossl.cluster.metrics import ami
from phenossl.errors import InputError


@dataclass(frozen=True, eq=False)
class ClusteringComparison:
    """AMI between runs A and B, the A->B cluster matching, and the indices of cells that moved."""

    ami: float
    matching: dict[int, int]  # cluster id in A -> matched cluster id in B (unmatched A clusters absent)
    changed: np.ndarray  # (n_changed,) int64 cell indices, ascending
    n_cells: int

    @property
    def n_changed(self) -> int:
        return int(self.changed.size)

    @property
    def fraction_changed(self) -> float:
        return self.n_changed / self.n_cells if self.n_cells else 0.0

    def relabel_b_as_a(self, labels_b: np.ndarray) -> np.ndarray:
        """B's labels renamed to their matched A ids (unmatched B clusters get new ids after A's),
        so that colours stay put when the user reclusters."""
        ids_b, codes_b = np.unique(np.asarray(labels_b).ravel(), return_inverse=True)
        b_to_a = {b: a for a, b in self.matching.items()}
        next_id = max(self.matching, default=-1) + 1
        new_ids = np.empty(ids_b.size, dtype=np.int64)
        for position, b in enumerate(ids_b.tolist()):
            if b in b_to_a:
                new_ids[position] = b_to_a[b]
            else:
                new_ids[position] = next_id
                next_id += 1
        return new_ids[codes_b]


def compare_clusterings(labels_a: np.ndarray, labels_b: np.ndarray) -> ClusteringComparison:
    """Match B's clusters to A's (Hungarian, max overlap) and list the cells whose cluster changed."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    labels_a, labels_b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if labels_a.size != labels_b.size:
        raise InputError(
            f"Cannot compare clusterings of different lengths: {labels_a.size} vs {labels_b.size} cells."
        )
    ids_a, codes_a = np.unique(labels_a, return_inverse=True)
    ids_b, codes_b = np.unique(labels_b, return_inverse=True)
    overlap = contingency_matrix(codes_a, codes_b)  # (k_a, k_b), small: clusters, not cells
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    partner = np.full(ids_a.size, -1, dtype=np.int64)
    partner[rows] = cols
    changed = np.flatnonzero(partner[codes_a] != codes_b).astype(np.int64)
    changed.flags.writeable = False
    return ClusteringComparison(
        ami=ami(labels_a, labels_b) if labels_a.size else float("nan"),
        matching={ids_a[r].item(): ids_b[c].item() for r, c in zip(rows, cols, strict=True)},
        changed=changed,
        n_cells=int(labels_a.size),
    )
