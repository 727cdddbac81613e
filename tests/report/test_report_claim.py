"""The issue's acceptance test, on trained runs of the bundled synthetic plate (three phenotypes crossed with two
densities): under `context` the report must say the clusters follow density, under `morphology` the phenotype
(the compound). The training is the one tests/pipeline/test_phenotype_claim.py measured (MoCo v2 / ResNet18,
15 epochs, seed 0): clusters' AMI vs compound 0.22 / 0.12 and vs density 0.02 / 0.19 (morphology / context).
The runs are trained once for both claim tests (the ``claim_runs`` fixture in tests/conftest.py)."""

import pytest

from phenossl.report import run_report

pytestmark = pytest.mark.slow

DENSITY = ("neighbours", "nuclei_per_field", "neighbours_in_tile", "density_condition")


def _report(root):
    report = run_report(root)
    scores = report.table.set_index("variable")["cluster_ami"]
    return report, max(scores[v] for v in DENSITY), scores["compound"]


def test_context_is_reported_as_following_density_and_morphology_the_phenotype(claim_runs):
    _, runs = claim_runs
    context, context_density, context_compound = _report(runs["context"][0])
    morphology, morph_density, morph_compound = _report(runs["morphology"][0])
    summary = f"context:\n{context.markdown}\nmorphology:\n{morphology.markdown}"
    assert context_density >= context_compound + 0.03, summary
    assert morph_compound >= morph_density + 0.05, summary
    context_first = context.reading.split(". ")[0]
    morph_first = morphology.reading.split(". ")[0]
    assert 0 <= context_first.find("local density") < context_first.find("compound"), summary
    assert 0 <= morph_first.find("compound"), summary
    assert "local density" not in morph_first.split("compound")[0], summary


def test_the_comparison_of_context_and_morphology_names_the_moves_and_the_transforms(claim_runs, tmp_path):
    """Run B (morphology) against run A (context), trained on the same cells: B's clusters follow the compound
    more and density less, and the reading names the crop that changed."""
    from phenossl.report.compare_run import compare_run_folders

    _, runs = claim_runs
    diff = compare_run_folders(runs["context"][0], runs["morphology"][0], out=tmp_path)
    rows = diff.variables.set_index("variable")
    summary = diff.reading + "\n" + diff.variables.to_string()
    assert rows.loc["compound", "cluster_ami_change"] >= 0.05, summary
    assert min(rows.loc[v, "cluster_ami_change"] for v in DENSITY) <= -0.05, summary
    more, less = diff.reading.split("clusters follow ", 1)[1].split(" more, and ")
    assert "compound (" in more and "local density" not in more, summary
    assert "local density (" in less, summary
    assert "center_crop added" in diff.reading and "random_crop removed" in diff.reading, summary
