"""The issue's acceptance test, on trained runs of the bundled synthetic plate (three phenotypes crossed with two
densities): under `context` the report must say the clusters follow density, under `morphology` the phenotype
(the compound). The training is the one tests/pipeline/test_phenotype_claim.py measured (MoCo v2 / ResNet18,
15 epochs, seed 0): clusters' AMI vs compound 0.22 / 0.12 and vs density 0.02 / 0.19 (morphology / context).
About 3 minutes per run on 2 CPU cores."""

import pandas as pd
import pytest

from phenossl.cluster import EmbeddingSpace
from phenossl.config import save_config
from phenossl.demo import demo_config
from phenossl.embed import embed_store
from phenossl.pipeline import RunPaths, prepare_run_dir, stage_tile
from phenossl.report import run_report
from phenossl.train import train

pytestmark = pytest.mark.slow

DENSITY = ("neighbours", "nuclei_per_field", "neighbours_in_tile", "density_condition")


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    config = demo_config(out=tmp_path_factory.mktemp("report-claim") / "tiles")
    return config, stage_tile(config, prepare_run_dir(config))


def _report(config, store, composition: str, root):
    """A run folder of ``composition`` beside the shared store: config, embeddings, clusters.csv; its report."""
    from phenossl.augment.specs import load_composition

    paths = RunPaths(root)
    root.mkdir()
    (root / "store").symlink_to(store.path, target_is_directory=True)
    train_config = config.train.model_copy(update={"composition_a": load_composition(composition), "epochs": 15})
    save_config(config.model_copy(update={"train": train_config}), paths.config)
    result = train(store, train_config, root / "training", seed=0)
    embeddings = embed_store(store, result.checkpoint, paths.embeddings)
    labels = EmbeddingSpace(embeddings).cluster(config.cluster.k, seed=0).labels
    pd.DataFrame({"cell_id": range(store.n_cells), "cluster": labels}).to_csv(paths.clusters, index=False)
    report = run_report(root)
    scores = report.table.set_index("variable")["cluster_ami"]
    return report, max(scores[v] for v in DENSITY), scores["compound"]


def test_context_is_reported_as_following_density_and_morphology_the_phenotype(sample_run, tmp_path):
    config, store = sample_run
    context, context_density, context_compound = _report(config, store, "context", tmp_path / "context")
    morphology, morph_density, morph_compound = _report(config, store, "morphology", tmp_path / "morphology")
    summary = f"context:\n{context.markdown}\nmorphology:\n{morphology.markdown}"
    assert context_density >= context_compound + 0.03, summary
    assert morph_compound >= morph_density + 0.05, summary
    context_first = context.reading.split(". ")[0]
    morph_first = morphology.reading.split(". ")[0]
    assert 0 <= context_first.find("local density") < context_first.find("compound"), summary
    assert 0 <= morph_first.find("compound"), summary
    assert "local density" not in morph_first.split("compound")[0], summary
