"""phenossl in napari: the whole workflow (segment, tile, compose augmentations, train, cluster, explore,
compare runs, export) as dock widgets, plus a reader for plate folders and the synthetic sample plate.

Layout: pure, Qt-free modules (``plate``, ``cells``, ``compositions``, ``session``, ``tasks``) hold the
glue between layers and the core; ``controller`` is the one Qt object per viewer that owns the state and
runs the workers; ``widgets`` are thin views on it. No science lives here: every result comes from the core.
"""

# Import the package before anything can import torchvision or cellpose: ``import phenossl`` loads triton
# with RTLD_DEEPBIND, which stops it from crashing a process that already holds napari's Mesa GL context
# (see phenossl._triton_guard and tests/napari/test_import_order.py). Being a subpackage guarantees the
# order already; the explicit import documents that it matters.
import phenossl  # noqa: F401
