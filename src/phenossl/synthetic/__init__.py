"""A synthetic multi-channel plate whose ground truth separates *phenotype* from *local cell density*.

Bendidi et al. (2024) showed that with single-cell tiles, random-crop augmentations make clusters follow
how many cells a tile shows, while 360-degree rotation plus a centre crop make them follow the central
cell's morphology. To show (and test) that, the data needs both factors, crossed and independent:

* three compound phenotypes that differ *subtly* in nucleus and cytoskeleton morphology (per-cell
  responses overlap, as in real screens), with a dose axis for one compound;
* sparse and dense wells for every treatment, so local density carries no phenotype information;
* random cell orientation, so orientation carries no information either (rotation removes it).

Fields look like widefield fluorescence of cultured cells (DNA, tubulin, actin; BBBC021-like intensities:
12-bit camera values scaled to 16 bits, background ~500, nuclei ~1800), and come with nuclei and whole-cell
ground-truth labels and a per-cell table. ``python -m phenossl.synthetic --out FOLDER --seed 0`` writes
the plate bundled in ``phenossl/sample_data/plate``.

Modules, in the order a plate is made: ``layout`` (design and treatments), ``cells`` (per-cell
parameters), ``shapes`` (geometry and labels), ``rendering`` (fluorescence, optics, camera), ``plate``
(fields and ground truth), ``files`` (writing, reading, the sample data and the command line).
"""

from phenossl.synthetic.cells import CellParams
from phenossl.synthetic.files import (
    CELLS_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    load_plate,
    main,
    sample_data_path,
    write_plate,
)
from phenossl.synthetic.layout import (
    CHANNELS,
    COMPOUNDS,
    DEFAULT_DENSITIES,
    DEFAULT_TREATMENTS,
    PHENOTYPES,
    PLATE_NAME,
    TILE_SIZE,
    Compound,
    PhenotypeEffect,
    phenotype_strength,
    plate_layout,
)
from phenossl.synthetic.plate import NEIGHBOUR_RADIUS, SyntheticPlate, make_synthetic_plate

__all__ = [
    "CELLS_FILE",
    "CHANNELS",
    "COMPOUNDS",
    "DEFAULT_DENSITIES",
    "DEFAULT_TREATMENTS",
    "METADATA_COLUMNS",
    "METADATA_FILE",
    "NEIGHBOUR_RADIUS",
    "PHENOTYPES",
    "PLATE_NAME",
    "TILE_SIZE",
    "CellParams",
    "Compound",
    "PhenotypeEffect",
    "SyntheticPlate",
    "load_plate",
    "main",
    "make_synthetic_plate",
    "phenotype_strength",
    "plate_layout",
    "sample_data_path",
    "write_plate",
]
