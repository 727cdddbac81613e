"""The parts the napari controller was split into, tested without Qt or a viewer: the pure helpers it moved
into plate / cells / layer_tables, the workflow state, the task runner's bookkeeping and the napari
compatibility shims."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from phenossl.errors import InputError
from phenossl.napari import cells, layer_tables, napari_compat, plate
from phenossl.napari.plate import PlateInfo
from phenossl.napari.session import Session
from phenossl.napari.workers import TaskRunner
from phenossl.napari.workflow import WorkflowState, open_session


class Layer:
    """A stand-in for a napari layer: a name, data and metadata (compared by identity, as napari's are)."""

    def __init__(self, name: str, shape: tuple[int, ...], metadata: dict | None = None) -> None:
        self.name = name
        self.data = np.zeros(shape, dtype=np.uint16)
        self.metadata = metadata or {}


class FakeStore:
    """What the plate and state helpers read of a TileStore."""

    def __init__(self, cells_table: pd.DataFrame, shapes: dict[str, tuple[int, int]], tile_size: int = 32):
        self.cells = cells_table
        self._shapes = shapes
        self.tile_size = tile_size
        self.n_cells = len(cells_table)
        self.info = {"report": {"skipped_border": 2, "padded": 1}}
        self.path = "/tmp/tiles-1"

    def field_keys(self) -> list[str]:
        return list(dict.fromkeys(self.cells["field"]))

    def labels(self, key: str) -> np.ndarray:
        return np.zeros(self._shapes[key], dtype=np.int32)


def _store() -> FakeStore:
    table = pd.DataFrame(
        {
            "label": [1, 2, 3, 4],
            "field": ["A01_s1", "A01_s1", "B02_s1", "B02_s1"],
            "plate": ["P1"] * 4,
            "well": ["A01", "A01", "B02", "B02"],
            "site": [1, 1, 1, 1],
            "centroid_y": [10.0, 20.0, 30.0, 40.0],
            "centroid_x": [11.0, 21.0, 31.0, 41.0],
        }
    )
    return FakeStore(table, {"A01_s1": (64, 64), "B02_s1": (48, 64)})


# --------------------------------------------------------------------------------------------------
# plate


def test_plate_of_a_reopened_store_is_rebuilt_from_its_cells_unless_an_open_image_covers_it():
    store = _store()
    rebuilt = plate.plate_from_store(store, [Layer("not a plate", (64, 64))])
    assert rebuilt.keys == ["A01_s1", "B02_s1"]
    assert rebuilt.shapes == [(64, 64), (48, 64)]
    assert rebuilt.wells == ["A01", "B02"] and rebuilt.plates == ["P1", "P1"] and rebuilt.sites == [1, 1]

    shown = PlateInfo(keys=["B02_s1", "A01_s1", "C03_s1"], shapes=[(64, 64)] * 3, channel="DNA")
    image = Layer("DNA", (3, 64, 64), shown.to_metadata())
    assert plate.plate_from_store(store, [Layer("x", (2, 2)), image]) == shown  # the images' field order
    partial = PlateInfo(keys=["A01_s1"], shapes=[(64, 64)])
    assert plate.plate_from_store(store, [Layer("one", (64, 64), partial.to_metadata())]) == rebuilt


def test_a_layer_without_reader_metadata_is_one_field_or_a_stack():
    assert plate.layer_plate(Layer("dapi", (64, 80))).keys == ["dapi"]
    assert plate.layer_plate(Layer("dapi", (2, 64, 80))).keys == ["dapi_f1", "dapi_f2"]
    info = PlateInfo(keys=["k1"], shapes=[(8, 8)], channel="DNA")
    assert plate.layer_plate(Layer("whatever", (8, 8), info.to_metadata())) == info
    assert plate.stack_shape_text(Layer("x", (3, 20, 30))) == "3 fields of 20 x 30"
    assert plate.stack_shape_text(Layer("x", (20, 30))) == "1 field of 20 x 30"


def test_tile_inputs_are_checked_before_anything_changes_and_the_nuclear_channel_comes_first():
    dna, actin, labels = Layer("DNA", (2, 32, 32)), Layer("actin", (2, 32, 32)), Layer("nuclei", (2, 32, 32))
    assert plate.check_tile_inputs([actin], dna, labels) == [dna, actin]
    assert plate.check_tile_inputs([dna, actin], dna, labels) == [dna, actin]
    with pytest.raises(InputError, match="tick at least one image layer"):
        plate.check_tile_inputs([], dna, labels)
    with pytest.raises(InputError, match="segment the nuclei first"):
        plate.check_tile_inputs([dna], dna, None)
    with pytest.raises(InputError, match="pick the nuclear stain"):
        plate.check_tile_inputs([dna], None, labels)
    with pytest.raises(InputError, match="same name"):
        plate.check_tile_inputs([dna, Layer("DNA", (2, 32, 32))], dna, labels)
    with pytest.raises(InputError, match="same shape"):
        plate.check_tile_inputs([dna, Layer("actin", (2, 32, 16))], dna, labels)
    with pytest.raises(InputError, match="the labels layer 'small'"):
        plate.check_tile_inputs([dna], dna, Layer("small", (1, 32, 32)))


def test_run_input_section_names_files_channels_and_metadata_as_the_cli_reads_them():
    info = PlateInfo(
        keys=["k"], shapes=[(8, 8)], source_paths=["/data/plate"], channel_map={"w1": "DNA"},
        metadata_path="/data/meta.csv",
    )
    section = plate.run_input_section(info, ["DNA", "actin"], "DNA")
    assert section == {
        "kind": "plate",
        "paths": ["/data/plate"],
        "channel_names": {"w1": "DNA", "actin": "actin"},
        "nuclear_channel": "DNA",
        "metadata": "/data/meta.csv",
    }
    assert "metadata" not in plate.run_input_section(PlateInfo(keys=["k"], shapes=[(8, 8)]), ["DNA"], "DNA")


# --------------------------------------------------------------------------------------------------
# cells


def test_store_rows_become_points_on_the_layers_fields_and_unknown_fields_are_left_out():
    store = _store()
    coords, rows = cells.row_coordinates(store.cells, np.array([3, 0, 2]), ["B02_s1", "A01_s1"], 3)
    np.testing.assert_array_equal(coords, [[0, 40, 41], [1, 10, 11], [0, 30, 31]])
    np.testing.assert_array_equal(rows, [3, 0, 2])
    coords, rows = cells.row_coordinates(store.cells, np.array([0, 2]), ["A01_s1"], 2)
    np.testing.assert_array_equal(coords, [[10, 11]])
    np.testing.assert_array_equal(rows, [0])
    coords, rows = cells.row_coordinates(store.cells, np.zeros(0, dtype=np.int64), ["A01_s1"], 3)
    assert coords.shape == (0, 3) and rows.size == 0


def test_marker_size_follows_the_nuclei_else_the_tile():
    nuclei = pd.DataFrame({"area": [np.pi * 100.0] * 3})  # radius 10
    assert cells.marker_size(nuclei, 64) == pytest.approx(26.0)
    assert cells.marker_size(None, 64) == 16.0
    assert cells.marker_size(nuclei.iloc[:0], 32) == 12.0


def test_status_lines_for_clusters_and_tiles():
    assert cells.cluster_sizes_text(np.array([40, 52, 61])) == "3 clusters of 40, 52 and 61 cells"
    assert cells.cluster_sizes_text(np.array([7])) == "1 cluster of 7 cells"
    many = np.arange(1, cells.SIZES_LISTED + 3)
    assert cells.cluster_sizes_text(many).startswith(f"{len(many)} clusters of 1-{many.max()} cells (median")
    text = cells.tiles_report_text(_store())
    assert text.startswith("4 cells tiled (32px) into /tmp/tiles-1")
    assert "1 tiles reach past the image edge" in text and "2 nuclei too close to a border" in text


# --------------------------------------------------------------------------------------------------
# layer_tables: what the user picked in a layer


def test_cells_picked_in_a_layer_table():
    features = pd.DataFrame(
        {"cell_id": np.array([None, 0, 1, None, 2], dtype=object), layer_tables.MANUAL_COLUMN: [0, 1, 0, 2, 3]}
    )
    np.testing.assert_array_equal(layer_tables.point_cell_ids(features), [-1, 0, 1, -1, 2])
    np.testing.assert_array_equal(layer_tables.manual_selection(features), [0, 2])  # the untiled one is dropped
    assert layer_tables.manual_selection(features.drop(columns=layer_tables.MANUAL_COLUMN)) is None
    assert layer_tables.manual_selection(features.drop(columns="cell_id")) is None
    np.testing.assert_array_equal(layer_tables.point_cell_ids(pd.DataFrame({"x": [1, 2]})), [-1, -1])
    assert layer_tables.label_cell(features, 2) == 1
    assert layer_tables.label_cell(features, 3) is None  # no tile
    assert layer_tables.label_cell(features, 0) is None and layer_tables.label_cell(features, 9) is None


# --------------------------------------------------------------------------------------------------
# workflow state


@dataclass
class FakeClustering:
    k: int


@dataclass
class FakeRecord:
    name: str
    store: FakeStore
    k_saved: int = 4
    clustering: FakeClustering | None = None
    space: object | None = None
    umap: np.ndarray | None = None
    has_embeddings: bool = True
    config: SimpleNamespace = field(init=False)

    def __post_init__(self) -> None:
        self.config = SimpleNamespace(seed=7, cluster=SimpleNamespace(k=self.k_saved))

    def tile_store(self) -> FakeStore:
        return self.store


def test_state_shows_the_active_runs_store_and_says_whether_its_clustering_is_saved(tmp_path):
    state = WorkflowState(Session(tmp_path))
    assert state.shown_store() is None and state.clustering_is_saved()
    session_store, run_store = _store(), _store()
    state.session.store = session_store
    assert state.shown_store() is session_store and state.field_keys(session_store) == ["A01_s1", "B02_s1"]
    state.plate = PlateInfo(keys=["B02_s1", "A01_s1"], shapes=[(64, 64)] * 2)
    assert state.field_keys(session_store) == ["B02_s1", "A01_s1"]

    record = FakeRecord("run-001", run_store, k_saved=4)
    state.session.runs = {"run-001": record, "run-002": FakeRecord("run-002", run_store, has_embeddings=False)}
    assert state.latest_embedded() == "run-001"
    state.selected = np.array([1, 2])
    assert state.show_run("run-001") is record and state.shown_store() is run_store and state.selected.size == 0
    assert state.clustering_is_saved()  # nothing clustered yet
    record.clustering = FakeClustering(k=4)
    assert state.clustering_is_saved()
    record.clustering = FakeClustering(k=6)
    assert not state.clustering_is_saved() and len(state.cluster_colors()) == 6


def test_state_selection_and_cancel_events(tmp_path):
    state = WorkflowState(Session(tmp_path))
    np.testing.assert_array_equal(state.select([5, -1, 2, 5]), [2, 5])  # -1: a nucleus without a tile
    assert state.selected.dtype == np.int64
    event = state.new_cancel("train")
    assert state.cancels["train"] is event and not event.is_set()
    shared = threading.Event()
    assert state.new_cancel("embed", shared) is shared  # the embedding after a training shares its Cancel


def test_paint_inputs_pass_the_cached_components_of_the_shown_space(tmp_path):
    state = WorkflowState(Session(tmp_path))
    record, space, inputs = state.paint_inputs()
    assert record is None and space is None and inputs["store_cells"] is None and inputs["seed"] == 0
    store = _store()
    run = FakeRecord("run-001", store, clustering=FakeClustering(k=3), space=object())
    state.active = run
    record, space, inputs = state.paint_inputs()
    assert record is run and space is run.space and inputs["pcs"] is None and inputs["seed"] == 7
    assert inputs["store_cells"] is store.cells and len(inputs["colors"]) == 3
    pcs = np.zeros((4, 2), dtype=np.float32)
    state.remember_pcs(run, space, pcs)
    assert state.paint_inputs()[2]["pcs"] is pcs
    run.clustering = None  # no clusters: no space, no colours
    _, space, inputs = state.paint_inputs()
    assert space is None and inputs["pcs"] is None and inputs["colors"] is None


def test_a_folder_with_files_is_reopened_an_empty_one_started(tmp_path):
    assert open_session(tmp_path / "new").runs == {}
    (tmp_path / "empty").mkdir()
    assert open_session(tmp_path / "empty").folder == (tmp_path / "empty").resolve()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a phenossl session folder"):  # reopened, and refused
        open_session(tmp_path / "other")


# --------------------------------------------------------------------------------------------------
# workers and napari compatibility


def test_task_counting_and_newest_wins_without_starting_a_worker():
    states: list[tuple[str, bool]] = []
    runner = TaskRunner(lambda task, running: states.append((task, running)), lambda what, exc: None)
    runner._started("preview")
    runner._started("preview")
    assert runner.busy and runner.running("preview")
    runner._done("preview")
    assert runner.running("preview")  # one is still in flight
    runner._done("preview")
    assert not runner.busy and states == [("preview", True), ("preview", True), ("preview", False)]

    first = runner.newest("paint")
    second = runner.newest("paint")
    other = runner.newest("preview")
    assert not first() and second() and other()


def test_label_texture_is_precomputed_where_napari_allows_and_skipped_otherwise():
    seen = []
    napari_compat.precompute_label_texture(SimpleNamespace(_data_to_texture=seen.append), np.int32)
    assert len(seen) == 1 and seen[0].dtype == np.int32
    napari_compat.precompute_label_texture(SimpleNamespace(), np.int32)  # an older / newer napari: no error
