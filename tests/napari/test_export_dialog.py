"""The Clusters step's Export dialog offers AnnData and pycytominer profiles besides the CSV, through the same
worker and the same replace question (a real napari window under Xvfb; the files read back with anndata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plugin_helpers import click, wait_task

from phenossl.export_formats import DIALOG_FILTERS, dialog_choice

pytestmark = pytest.mark.gui


def test_the_chosen_file_type_picks_the_format_and_the_suffix():
    assert dialog_choice("/d/cells", DIALOG_FILTERS["h5ad"]) == (Path("/d/cells.h5ad"), "h5ad")
    assert dialog_choice("/d/cells.csv", DIALOG_FILTERS["csv"])[1] == "csv"
    assert str(dialog_choice("/d/cells", DIALOG_FILTERS["csv"])[0]) == "/d/cells.csv"
    assert dialog_choice("/d/plate1", DIALOG_FILTERS["profiles"]) == (Path("/d/plate1"), "profiles")
    assert dialog_choice("/d/x.h5ad", "")[1] == "h5ad"  # no filter reported: the suffix decides


def test_export_as_anndata_and_profiles_from_the_dialog_asking_before_replacing(clustered, qtbot, monkeypatch,
                                                                               tmp_path):
    anndata = pytest.importorskip("anndata", reason="anndata is a dependency of phenossl: install phenossl again")
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    _, widget, controller, record = clustered
    clusters = widget.clusters
    offered = []

    def dialog(*args, **kwargs):
        offered.append(args[3])
        return str(tmp_path / "out" / "cells"), DIALOG_FILTERS["h5ad"]

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    wait_task(qtbot, controller, "export", lambda: click(qtbot, clusters.export_button))
    assert "AnnData (*.h5ad)" in offered[0] and "CSV files (*.csv)" in offered[0] and "pycytominer" in offered[0]
    target = tmp_path / "out" / "cells.h5ad"
    adata = anndata.read_h5ad(target)
    np.testing.assert_array_equal(adata.obs["cluster"].astype(int), record.clustering.labels)
    np.testing.assert_array_equal(adata.obsm["X_phenossl"], np.load(record.paths.embeddings))
    assert adata.uns["phenossl"]["config"]["cluster"]["k"] == 3
    assert "Exported cells.h5ad" in clusters.status.text()

    # the same question as for the CSV: the user says no, then yes
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or answers[len(asked) - 1])
    target.write_bytes(b"old")
    click(qtbot, clusters.export_button)
    qtbot.waitUntil(lambda: bool(asked) and not controller.running("export"), timeout=60_000)
    assert "would replace 1 existing file(s)" in asked[0] and "cells.h5ad" in asked[0]
    assert target.read_bytes() == b"old" and "nothing was written" in clusters.status.text()
    click(qtbot, clusters.export_button)
    qtbot.waitUntil(lambda: len(asked) == 2 and not controller.running("export"), timeout=60_000)
    qtbot.waitUntil(lambda: "Exported cells.h5ad" in clusters.status.text(), timeout=60_000)
    assert anndata.read_h5ad(target).n_obs == record.clustering.n_cells

    # profiles: the name is a folder holding cells.csv and wells.csv
    cells = record.tile_store().cells
    folder = tmp_path / "profiles"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(folder), DIALOG_FILTERS["profiles"]))
    wait_task(qtbot, controller, "export", lambda: click(qtbot, clusters.export_button))
    assert {"plate", "well", "compound"} <= set(cells.columns)  # the sample plate's metadata
    profiles = pd.read_csv(folder / "cells.csv")
    assert len(profiles) == record.clustering.n_cells
    assert profiles["Metadata_Cluster"].tolist() == record.clustering.labels.tolist()
    assert profiles["Metadata_compound"].tolist() == cells["compound"].tolist()
    assert "Metadata_file_DNA" not in profiles.columns  # file names are not treatments
    wells = pd.read_csv(folder / "wells.csv")
    assert wells["Metadata_Object_Count"].sum() == record.clustering.n_cells
