"""Embed-and-cluster analysis: a cached embedding space, seeded K-Means with the cells nearest each
centroid, a seeded (subsample-fitted) UMAP layout, quality metrics, and run-to-run comparison.

Importing this package loads numpy and pandas only; scikit-learn, scipy and umap-learn load when first used.
"""

from phenossl.cluster.compare import ClusteringComparison, compare_clusterings
from phenossl.cluster.kmeans import Clustering, cluster_features
from phenossl.cluster.metrics import DEFAULT_LABEL_COLUMNS, ami, clustering_metrics, silhouette
from phenossl.cluster.projection import UMAP_MAX_FIT, umap_embedding
from phenossl.cluster.space import EmbeddingSpace, Preprocessing, check_embeddings, prepare_features

__all__ = [
    "DEFAULT_LABEL_COLUMNS",
    "UMAP_MAX_FIT",
    "Clustering",
    "ClusteringComparison",
    "EmbeddingSpace",
    "Preprocessing",
    "ami",
    "check_embeddings",
    "cluster_features",
    "clustering_metrics",
    "compare_clusterings",
    "prepare_features",
    "silhouette",
    "umap_embedding",
]
