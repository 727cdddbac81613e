"""benchmarks/yaware_transfer_bbbc021.py: the held-out-plate study of y-aware against SimCLR, MoCo v2, cp_measure,
each stain's mean and the untrained encoder, end to end on the smoke subset; the training plate's store holds only
that plate's cells; trained rows are reused only from a record with the same training settings."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import yaware_transfer_bbbc021 as study  # noqa: E402


@pytest.mark.shared_data
def test_every_representation_is_trained_on_one_plate_and_scored_on_the_other(run_benchmark, shared_data):
    record = run_benchmark("yaware_transfer_bbbc021.py", "--data", shared_data, timeout=600)
    rows = record["results"]["rows"]
    representations = {row["representation"] for row in rows}
    stains = {f"{name} mean intensity alone" for name in ("DNA", "tubulin", "actin")}
    assert representations == {"CellProfiler (cp_measure)", "untrained encoder (random-init)", *stains,
                               *study.METHODS}
    assert all(row["trained"] == (row["representation"] in study.METHODS) for row in rows)
    for row in rows:
        assert row["status"] == "ok", row
        fit, test = row["direction"].split(" -> ")
        assert fit != test and {fit, test} == set(study.PLATES)
        assert row["dose_response"]["fit_plate"] == fit and row["dose_response"]["scored_plate"] == test
        assert -1 <= row["dose_response"]["spearman_rho"] <= 1
        assert row["clustering"]["as clustered"]["k"] == 2
    trained = [row for row in rows if row["representation"] in study.METHODS]
    assert len(trained) == 2 * len(study.METHODS)
    assert all(0 < row["trained_cells"] < record["settings"]["n_cells"] for row in trained)
    assert record["settings"]["yaware"] == {"label_column": "concentration_uM", "sigma": study.SIGMA,
                                            "label_transform": "log10"}
    assert len(record["results"]["summary"]) == len({(r["representation"], r["direction"]) for r in rows})


def test_the_plate_store_holds_that_plate_only_with_the_same_tiles(tmp_path):
    import pandas as pd

    from phenossl.tiles.store import TileStoreWriter

    n = 6
    cells = pd.DataFrame({"plate": ["P1", "P2", "P1", "P2", "P2", "P1"], "compound": ["DMSO"] * n})
    writer = TileStoreWriter(tmp_path / "all", n, ["DNA"], 16)
    tiles = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((n, 1, 16, 16), np.float32)
    writer.append(tiles, np.ones((n, 16, 16), np.uint8))
    store = writer.finish(cells, {"source": "test"})
    plate = study.plate_store(store, "P2", tmp_path)
    assert plate.n_cells == 3 and (plate.cells["plate"] == "P2").all()
    assert [float(t[0, 0, 0]) for t in np.asarray(plate.tiles)] == [1.0, 3.0, 4.0]
    assert study.plate_store(store, "P2", tmp_path).path == plate.path  # reused, not rebuilt


def test_trained_rows_are_reused_only_from_a_record_with_the_same_training(tmp_path):
    settings = {"methods": ["yaware"], "epochs": 10, "train": {"arch": "resnet18"}, "embed": {"view": "center"},
                "yaware": {"sigma": 0.5}, "plates": list(study.PLATES), "n_cells": 100}
    rows = [{"representation": "yaware", "direction": "A -> B", "seed": 0, "status": "ok"},
            {"representation": "CellProfiler (cp_measure)", "direction": "A -> B", "seed": 0, "status": "ok"}]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"settings": settings, "results": {"rows": rows}}))
    assert list(study.reusable_trained_rows(earlier, settings)) == [("yaware", "A -> B", 0)]
    with pytest.raises(SystemExit, match="epochs"):
        study.reusable_trained_rows(earlier, {**settings, "epochs": 20})
