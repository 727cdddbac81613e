"""Two runs of the same cells compared (issue 13 section 2): a run whose clusters follow density against one whose
clusters follow the compound must be read as "B follows the compound more and density less"; the contingency,
the moves and the changed cells must agree with each other; bad pairs get clear messages; nothing is replaced
without --overwrite; and the configuration difference names the transforms added, removed and changed."""

import numpy as np
import pandas as pd
import pytest
from report_helpers import compound_embedding, density_embedding, kmeans_labels, make_run, plate_cells

from phenossl.cli import main
from phenossl.config import config_from_dict, save_config
from phenossl.errors import InputError, OutputExistsError
from phenossl.report import run_report
from phenossl.report.compare import cluster_moves, contingency_table, shared_cells
from phenossl.report.compare_run import compare_run_folders, compare_targets
from phenossl.report.config_diff import composition_differences, config_differences


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run "density" clusters the cells by their neighbours, run "compound" by their compound (k = 2 each); run B
    was trained with `morphology` where A used `context`."""
    cells, labels = plate_cells(seed=3, n_wells=8)
    base = tmp_path_factory.mktemp("compare")
    runs = {}
    for name, embed, composition in (("density", density_embedding, "context"),
                                     ("compound", compound_embedding, "morphology")):
        embeddings = embed(cells)
        paths = make_run(base / name, embeddings, kmeans_labels(embeddings), cells, labels)
        save_config(config_from_dict({"name": "synthetic", "seed": 0, "cluster": {"k": 2},
                                      "train": {"composition_a": composition}, "output": {"dir": str(paths.root)}}),
                    paths.config)
        runs[name] = paths
    return cells, runs


def test_the_comparison_says_which_variables_the_second_run_follows_more_and_less(two_runs, tmp_path):
    _, runs = two_runs
    diff = compare_run_folders(runs["density"].root, runs["compound"].root, out=tmp_path)
    rows = diff.variables.set_index("variable")
    assert rows.loc["compound", "cluster_ami_change"] > 0.5, diff.reading
    assert rows.loc["neighbours", "cluster_ami_change"] < -0.3, diff.reading
    for run, side in (("density", "a"), ("compound", "b")):  # each side is that run's own report
        alone = run_report(runs[run].root, overwrite=True).table.set_index("variable")
        assert np.allclose(rows[f"cluster_ami_{side}"], alone.loc[rows.index, "cluster_ami"], equal_nan=True)
        assert np.allclose(rows[f"probe_score_{side}"], alone.loc[rows.index, "probe_score"], equal_nan=True)
    follows = diff.reading.split("clusters follow ", 1)[1]
    more, less = follows.split(" more, and ")
    assert "compound (" in more and "local density" not in more, diff.reading
    assert less.startswith("local density (") and " less than density's" in less and "compound" not in less, \
        diff.reading
    assert "composition A (context -> morphology)" in diff.reading
    assert "center_crop added" in diff.reading and "random_crop removed" in diff.reading


def test_contingency_moves_and_changed_cells_agree(two_runs, tmp_path):
    cells, runs = two_runs
    diff = compare_run_folders(runs["density"].root, runs["compound"].root, out=tmp_path)
    n = len(cells)
    assert diff.contingency.to_numpy().sum() == n and diff.comparison.n_cells == n
    kept = sum(diff.contingency.loc[a, b] for a, b in diff.comparison.matching.items())
    assert diff.comparison.n_changed == n - kept == diff.moves["n_cells"].sum()
    # B's columns follow their A partners, so the kept cells lie on the diagonal
    assert list(diff.contingency.columns[: len(diff.comparison.matching)]) == \
        [diff.comparison.matching[a] for a in diff.contingency.index]
    changed = pd.read_csv(tmp_path / "compare-density-changed.csv")
    assert len(changed) == diff.comparison.n_changed
    truth_a = pd.read_csv(runs["density"].clusters)["cluster"].to_numpy()
    truth_b = pd.read_csv(runs["compound"].clusters)["cluster"].to_numpy()
    assert (truth_a[changed["cell_id"]] == changed["cluster_a"]).all()
    assert (truth_b[changed["cell_id"]] == changed["cluster_b"]).all()
    assert [p.name for p in diff.written] == [p.name for p in compare_targets(tmp_path, "density")]
    assert all(p.stat().st_size > 0 for p in diff.written)
    markdown = (tmp_path / "compare-density.md").read_text()
    assert markdown.splitlines()[2] == diff.reading and "| A 0 |" in markdown


def test_a_run_against_itself_changes_nothing(two_runs, tmp_path):
    import shutil

    _, runs = two_runs
    copy = tmp_path / "density-again"
    shutil.copytree(runs["density"].root, copy)
    diff = compare_run_folders(runs["density"].root, copy, out=tmp_path)
    assert diff.comparison.ami == pytest.approx(1.0) and diff.comparison.n_changed == 0 and diff.moves.empty
    assert "same settings" in diff.reading and "about as much" in diff.reading
    assert np.allclose(diff.variables["cluster_ami_change"].dropna(), 0)


def test_bad_pairs_get_clear_messages_and_nothing_is_written_over(two_runs, tmp_path, capsys):
    _, runs = two_runs
    with pytest.raises(InputError, match="both runs are"):
        compare_run_folders(runs["density"].root, runs["density"].root, out=tmp_path)
    other_cells, _ = plate_cells(seed=9, n_wells=2)
    other_cells["label"] += 1000  # no cell in common
    embeddings = density_embedding(other_cells)
    other = make_run(tmp_path / "other", embeddings, kmeans_labels(embeddings), other_cells)
    with pytest.raises(InputError, match="share no cell"):
        compare_run_folders(runs["density"].root, other.root, out=tmp_path)
    assert not list(tmp_path.glob("compare-*"))
    out = tmp_path / "out"
    assert main(["compare", str(runs["density"].root), str(runs["compound"].root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("# compound against density")
    (out / "compare-density.md").write_text("my notes")
    assert main(["compare", str(runs["density"].root), str(runs["compound"].root), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "compare-density.md").read_text() == "my notes"
    with pytest.raises(OutputExistsError):
        compare_run_folders(runs["density"].root, runs["compound"].root, out=out)
    compare_run_folders(runs["density"].root, runs["compound"].root, out=out, overwrite=True)
    assert (out / "compare-density.md").read_text() != "my notes"


def test_written_into_run_b_by_default_under_its_lock(two_runs, tmp_path):
    import shutil

    _, runs = two_runs
    b = tmp_path / "b"
    shutil.copytree(runs["compound"].root, b)
    diff = compare_run_folders(runs["density"].root, b)
    assert all(p.parent == b for p in diff.written)
    assert (b / ".phenossl.lock").exists()


def test_only_shared_cells_are_compared_in_run_a_order():
    a = pd.DataFrame({"field": ["f1"] * 4, "label": [1, 2, 3, 4]})
    b = pd.DataFrame({"field": ["f1"] * 3, "label": [4, 2, 9]})
    rows_a, rows_b = shared_cells(a, b)
    assert rows_a.tolist() == [1, 3] and rows_b.tolist() == [1, 0]
    crops = pd.DataFrame({"cell_id": [0, 1], "crop_index": [0, 1]})
    with pytest.raises(InputError, match="identify their cells differently"):
        shared_cells(a, crops)


def test_contingency_puts_matched_clusters_on_the_diagonal():
    a = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    b = np.array([5, 5, 3, 3, 3, 4, 4, 4])
    table = contingency_table(a, b, {0: 5, 1: 3, 2: 4})
    assert list(table.columns) == [5, 3, 4] and np.diag(table.to_numpy()).tolist() == [2, 2, 3]
    moves = cluster_moves(a, b, np.array([2]))
    assert moves.to_dict("records") == [{"cluster_a": 0, "cluster_b": 3, "n_cells": 1, "share_of_a": 1 / 3}]


def test_composition_differences_name_added_removed_and_changed_transforms():
    a = {"transforms": [{"kind": "rotation", "p": 1.0, "degrees": 180.0}, {"kind": "blur", "p": 0.5},
                        {"kind": "center_crop", "p": 1.0, "fraction": 0.7}]}
    b = {"transforms": [{"kind": "rotation", "p": 1.0, "degrees": 90.0}, {"kind": "flip", "p": 0.5},
                        {"kind": "center_crop", "p": 1.0, "fraction": 0.7}]}
    assert composition_differences(a, b) == ["flip added (p 0.5)", "blur removed", "rotation degrees 180 -> 90"]
    assert composition_differences(a, a) == []


def test_config_differences_name_what_shapes_the_embedding_only():
    base = config_from_dict({"name": "a", "train": {"composition_a": "morphology"}}).model_dump(mode="json")
    other = config_from_dict({"name": "b", "train": {"composition_a": "morphology", "weight_a": 0.5, "epochs": 7,
                                                     "device": "cpu", "amp": False},
                              "output": {"dir": "/elsewhere"}}).model_dump(mode="json")
    lines = config_differences(base, other)
    assert lines == ["train.epochs 20 -> 7", "train.weight_a 1 -> 0.5 (composition B, context, now in the loss)"]
    measured = config_from_dict({"name": "m", "representation": "cellprofiler"}).model_dump(mode="json")
    assert config_differences(base, measured) == ["representation ssl -> cellprofiler"]
