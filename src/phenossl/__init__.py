"""phenossl: microscopy phenotype discovery with self-supervised learning.

Segment nuclei, tile single cells, train a self-supervised encoder with the augmentations you choose,
cluster the embeddings, and explore the clusters in napari.
"""

from phenossl._triton_guard import preload_triton

preload_triton()  # before anything imports torchvision or cellpose: see _triton_guard

__version__ = "0.1.0"
