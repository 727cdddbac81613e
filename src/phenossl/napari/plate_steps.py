"""Step 1 of the workflow: segment the plate's nuclei and tile every cell, in workers; and the nuclei
layers of a reopened session folder.

Every input is checked before any layer, table or setting changes (a refused input loses nothing); the
workers read the layers' data, segment, measure and tile; their results become the nuclei layers
(``layers.NucleiLayers.show_nuclei``) and the session's tile store.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from phenossl.config import RunConfig, SegmentConfig, TileConfig
from phenossl.errors import PhenosslError
from phenossl.napari import cells as cellsmod
from phenossl.napari import tasks
from phenossl.napari.plate import (
    PlateInfo,
    as_field_stack,
    channel_name,
    check_tile_inputs,
    layer_plate,
    plate_from_store,
    run_input_section,
)


class PlateSteps:
    """Starts the segmentation, tiling and nuclei-reopening workers of ``controller`` (a
    ``SessionController``: its state, runner, painter and signals) and shows their results."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.state = controller.state
        self.runner = controller.runner
        self.painter = controller.painter

    def segment(self, nuclear_layer: Any, segmentation: SegmentConfig):
        if self.runner.running("segment"):
            raise PhenosslError("segmentation is already running")
        info = layer_plate(nuclear_layer)
        self.state.segmentation = segmentation
        return self.runner.launch(
            "segment", tasks.segment_fields, as_field_stack(nuclear_layer.data), info, segmentation,
            progress={"total": info.n_fields, "desc": f"Segmenting {info.n_fields} field(s)"},
            on_returned=partial(self._segmented, info, nuclear_layer),
        )

    def _segmented(self, info: PlateInfo, reference: Any, result: tasks.SegmentResult) -> None:
        self.state.plate = info
        self.painter.show_nuclei(result.nuclei, reference, "segment")
        message = f"{len(result.nuclei.table)} nuclei in {info.n_fields} field(s)"
        if result.empty_fields:
            message += f"; no nucleus in {', '.join(result.empty_fields[:3])}"
        message += ". Check them (fix with the Labels tools if needed), then make tiles."
        self.controller.status.emit(message)

    def make_tiles(self, image_layers: list, nuclear_layer: Any, labels_layer: Any, tiles: TileConfig):
        if self.runner.running("tiles"):
            raise PhenosslError("tiles are already being made")
        image_layers = check_tile_inputs(image_layers, nuclear_layer, labels_layer)
        info = layer_plate(nuclear_layer)
        names = [channel_name(layer) for layer in image_layers]
        input_section = run_input_section(info, names, channel_name(nuclear_layer))
        input_config = RunConfig(input=input_section).input
        store_path = self.state.session.next_store_path()
        store_path.parent.mkdir(parents=True, exist_ok=True)

        self.state.plate, self.state.tiles, self.state.input_section = info, tiles, input_section
        self.painter.adopt_labels(labels_layer)
        return self.runner.launch(
            "tiles", tasks.tile_plate, [layer.data for layer in image_layers], names, labels_layer.data, info,
            store_path, input_config=input_config, segmentation=self.state.segmentation, tiles=tiles,
            metadata=info.field_metadata(), progress={"desc": f"Making {tiles.size}px tiles"},
            on_returned=partial(self._tiled, nuclear_layer),
        )

    def _tiled(self, reference: Any, result: tasks.TileResult) -> None:
        self.state.session.store = result.store
        if result.renumbered:
            from napari.utils.notifications import show_info

            show_info(
                f"Nucleus ids in {self.painter.labels_layer.name!r} repeated between fields; they were "
                "renumbered so that every cell has its own id (and its own cluster colour)."
            )
        message = cellsmod.tiles_report_text(result.store)

        def announce() -> None:
            self.controller.status.emit(message)
            self.controller.store_changed.emit()

        # the user may have added, removed or redrawn nuclei: the layers take the worker's table
        self.painter.show_nuclei(
            result.nuclei, reference, "tiles", replace_data=result.renumbered, then=announce
        )

    def reopen_nuclei(self, store: Any) -> None:
        """Rebuild the nuclei layers from a reopened store's labels (in the open images' field order), in a
        worker: stacking the label images and measuring the nuclei takes seconds at 100k cells. Layers
        already there are only repainted."""
        if self.painter.labels_layer is not None:
            self.painter.repaint()
            return
        info = plate_from_store(store, self.painter.viewer.layers)
        self.runner.launch(
            "nuclei", tasks.nuclei_from_store, store, info, progress={"desc": "Reopening the nuclei"},
            on_returned=partial(self._nuclei_reopened, info),
        )

    def _nuclei_reopened(self, info: PlateInfo, result: tasks.NucleiResult) -> None:
        if self.painter.labels_layer is not None:  # the user segmented meanwhile: keep theirs
            return
        self.state.plate = info
        self.painter.show_nuclei(result, None, "nuclei", then=self.painter.repaint)  # the shown run's too
