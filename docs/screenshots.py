"""Take the user guide's screenshots from the real napari window, running the workflow on the sample plate.

    xvfb-run -a .venv/bin/python docs/screenshots.py          # writes docs/images/*.png
    xvfb-run -a .venv/bin/python docs/screenshots.py --only-report   # 15-runs-report.png alone (a few minutes)
    xvfb-run -a .venv/bin/python docs/screenshots.py --only-compare  # 16-runs-compare-transforms.png alone

Every picture is the whole napari window (``viewer.screenshot(canvas_only=False)``) or, for dialogs,
the dialog itself (``QWidget.grab``). Training is kept short (CPU), so loss curves and clusters are
those of a quick run, not of a finished one. The session folder is a temporary one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

IMAGES = Path(__file__).resolve().parent / "images"
WINDOW = (1680, 1050)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the PNG files")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the first run")
    parser.add_argument("--only-report", action="store_true",
                        help="only the Runs step's report (15-runs-report.png), after one quick run")
    parser.add_argument("--only-clusters", action="store_true",
                        help="only the Clusters step (06-explore.png: Suggest k's curve, then the clusters), after "
                             "one quick run")
    parser.add_argument("--only-compare", action="store_true",
                        help="only the Runs step's comparison (16-runs-compare-transforms.png), after two quick "
                             "runs: morphology, then context")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    from qtpy.QtCore import QEventLoop, QPoint, QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    import napari

    viewer = napari.Viewer(show=True, title="napari + phenossl")
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()

    def settle(ms: int = 400) -> None:
        """Let Qt lay out and paint (a short real event loop, not a sleep)."""
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def shot(name: str) -> None:
        settle()
        path = args.out / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path, flush=True)

    def wait_until(condition, timeout: float = 600.0, settle: int = 6) -> None:
        """Run the event loop until ``condition`` has held for ``settle`` ticks of 50 ms in a row: one step may
        start the next task just after the last one ends (a run shown: its clustering, then its layout)."""
        deadline = time.monotonic() + timeout
        loop = QEventLoop()
        timer = QTimer()
        held = [0]

        def tick() -> None:
            held[0] = held[0] + 1 if condition() else 0
            if held[0] >= settle or time.monotonic() > deadline:
                loop.quit()

        timer.timeout.connect(tick)
        timer.start(50)
        loop.exec()
        timer.stop()
        if not condition():
            raise TimeoutError("the workflow step did not finish in time")

    def toggle_activity() -> None:
        """Click napari's "activity" button (status bar, bottom right): opens or closes its progress bars."""
        try:
            viewer.window._qt_window._activity_dialog._toggleButton._activityBtn.click()
        except AttributeError as exc:  # napari's own widgets: the picture goes without it
            print("no activity dialog:", exc, file=sys.stderr)

    # 0. the sample plate, as File > Open Sample > phenossl shows it
    viewer.open_sample("phenossl", "synthetic_plate")
    viewer.dims.set_point(0, 0)
    shot("01-sample-plate")

    # the workflow dock, as Plugins > phenossl > Phenotype discovery opens it
    _, widget = viewer.window.add_plugin_dock_widget("phenossl", "Phenotype discovery (all steps)")
    controller = widget.controller
    session = Path(tempfile.mkdtemp(prefix="phenossl-screens-")) / "session"
    controller.set_session_folder(session)
    wait_until(lambda: not controller.busy)

    if args.only_report:
        return only_report(viewer, widget, args.epochs, shot, wait_until)
    if args.only_compare:
        return only_compare(viewer, widget, args.epochs, shot, wait_until)
    if args.only_clusters:
        first_run(viewer, widget, args.epochs, wait_until)
        clusters_step(viewer, widget, shot, wait_until)
        viewer.close()
        return 0

    # 1. segment
    widget.segment._segment()
    wait_until(lambda: not controller.busy)
    viewer.layers.selection.active = controller.labels_layer
    viewer.scene.camera.center = (200, 250)
    viewer.scene.camera.zoom = 1.6
    shot("02-segmented")

    # 1b. tiles (96 px keep the CPU training of the screenshots short; the default is 196 px)
    widget.segment.tile_size.setValue(96)
    widget.segment._make_tiles()
    wait_until(lambda: not controller.busy)
    widget.tabs.setCurrentIndex(0)
    shot("03-tiles-made")

    # 2. compositions A (morphology) and B (context) with the live preview
    widget.tabs.setCurrentIndex(1)
    widget.augment.weight.setValue(70)
    widget.augment.cell.setValue(12)
    wait_until(lambda: not controller.busy)
    shot("04-augmentations")

    # 3. training with the live loss curve
    widget.augment.weight.setValue(100)
    widget.tabs.setCurrentIndex(2)
    widget.train.epochs.setValue(args.epochs)
    widget.train.batch.setValue(64)
    widget.train.resolution.setValue(48)
    controller.explore_after_training = True
    widget.train._train()
    wait_until(lambda: len(widget.train.loss_plot.steps) >= 12)
    toggle_activity()  # napari's progress bar of the training, as the activity button at the bottom shows it
    shot("05-training")
    toggle_activity()
    wait_until(lambda: not controller.busy)

    # 4. clusters on the plate, UMAP and the gallery of typical cells (k as Suggest k chose it)
    clusters_step(viewer, widget, shot, wait_until)

    # clicking a typical cell in the gallery goes to it on the plate
    record = controller.active
    widget.clusters.gallery.buttons[1][0].click()
    viewer.scene.camera.zoom = max(viewer.scene.camera.zoom, 2.5)
    shot("07-gallery-go-to-cell")

    # the UMAP lasso selects cells in the layers
    xy = record.umap
    centre = xy[record.clustering.labels == min(2, record.clustering.k - 1)].mean(axis=0)
    spread = xy.std(axis=0) * 0.35
    lasso = [tuple(centre + spread * np.array(p)) for p in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    widget.umap._lasso_done(lasso)
    viewer.layers.selection.active = controller.points_layer
    viewer.reset_view()
    shot("08-umap-lasso")

    # 5. a second run with other augmentations, from the first run's encoder; then compare
    widget.augment.panel_a.preset.setCurrentText("context")
    widget.train.init_from.setCurrentIndex(widget.train.init_from.findData(record.name))
    widget.train.epochs.setValue(1)
    widget.train._train()
    wait_until(lambda: not controller.busy)
    widget.runs.compare.pick("run-001", "run-002")
    widget.runs.compare._compare()
    wait_until(lambda: not controller.busy)
    widget.tabs.setCurrentIndex(4)
    shot("09-runs-compare")
    scroll_to(widget.runs.compare)
    shot("16-runs-compare-transforms")
    widget.runs.compare._select_changed()
    viewer.layers.selection.active = controller.points_layer
    widget.tabs.setCurrentIndex(3)
    shot("10-changed-cells")

    # 6. export, and the question asked before anything is replaced
    widget.tabs.setCurrentIndex(3)
    target = session.parent / "exports" / "clusters.csv"
    target.parent.mkdir()
    widget.clusters.export_to(target)
    wait_until(lambda: not controller.busy)
    shot("11-exported")

    # exporting again to the same file: the real question the widget asks, grabbed, then answered "No"
    def answer_no_when_asked() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            asker.stop()
            box.grab().save(str(args.out / "12-replace-question.png"))
            print("wrote", args.out / "12-replace-question.png", flush=True)
            box.button(QMessageBox.StandardButton.No).click()

    asker = QTimer()
    asker.timeout.connect(answer_no_when_asked)
    asker.start(100)
    widget.clusters.export_to(target)
    wait_until(lambda: not asker.isActive() and not controller.busy, timeout=120)

    # does training beat measuring? the CellProfiler measurements beside the trained runs, scored on the plate's
    # own treatment column (each plate standardised to its DMSO wells too)
    widget.tabs.setCurrentIndex(2)
    widget.train._baseline("cellprofiler")
    wait_until(lambda: not controller.busy)
    shot("13-measure-cells")
    widget.tabs.setCurrentIndex(4)
    widget.runs._evaluate()
    wait_until(lambda: not controller.busy)
    widget.runs.evaluation.scrollToTop()
    shot("14-training-vs-measuring")

    # what the first run's clusters follow: the report of the shown clustering
    controller.activate_run("run-001")
    wait_until(lambda: not controller.busy)
    runs_report(widget, shot, wait_until)

    # where the plugin is in napari's menus
    try:
        menu = viewer.window.plugins_menu
        submenu = next(a.menu() for a in menu.actions() if a.text().replace("&", "") == "phenossl")
        submenu.popup(QPoint(300, 60))
        settle()
        submenu.grab().save(str(args.out / "00-plugins-menu.png"))
        submenu.close()
        print("wrote", args.out / "00-plugins-menu.png", flush=True)
    except Exception as exc:  # the menu's layout is napari's: the guide's text still says where
        print("no plugins menu picture:", exc, file=sys.stderr)

    viewer.close()
    app.processEvents()
    return 0


def scroll_to(panel) -> None:
    """Scroll the step's page so that ``panel`` starts at its top (laid out first: new pictures change its size)."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    QApplication.processEvents()
    area = panel.parentWidget()
    while area is not None and not isinstance(area, QScrollArea):
        area = area.parentWidget()
    if area is not None:
        area.verticalScrollBar().setValue(panel.pos().y())


def clusters_step(viewer, widget, shot, wait_until) -> None:
    """Step 4: Suggest k (its silhouette and AMI curve for k = 2..15), Recluster with the k it chose, the clusters
    on the plate, the UMAP and the gallery."""
    controller = widget.controller
    widget.tabs.setCurrentIndex(3)
    clusters = widget.clusters
    compound = clusters.ami_column.findData("compound")
    if compound >= 0:
        clusters.ami_column.setCurrentIndex(compound)
    clusters._suggest_k()
    wait_until(lambda: not controller.busy and clusters.curve is not None)
    clusters._recluster()  # with the k Suggest k set
    wait_until(lambda: not controller.busy)
    viewer.layers.selection.active = controller.labels_layer
    viewer.reset_view()
    shot("06-explore")


def runs_report(widget, shot, wait_until) -> None:
    """Step 5's "What do the clusters follow?" for the shown run, scrolled into view."""
    widget.tabs.setCurrentIndex(4)
    panel = widget.runs.report
    panel._report()
    wait_until(lambda: not widget.controller.busy)
    scroll_to(panel)
    shot("15-runs-report")


def first_run(viewer, widget, epochs: int, wait_until) -> None:
    """Tiles and one short run (composition A: morphology), as the full script makes them."""
    controller = widget.controller
    widget.segment._segment()
    wait_until(lambda: not controller.busy)
    widget.segment.tile_size.setValue(96)
    widget.segment._make_tiles()
    wait_until(lambda: not controller.busy)
    widget.augment.weight.setValue(100)
    widget.train.epochs.setValue(epochs)
    widget.train.batch.setValue(64)
    widget.train.resolution.setValue(48)
    controller.explore_after_training = True
    widget.train._train()
    wait_until(lambda: not controller.busy)
    viewer.reset_view()


def only_report(viewer, widget, epochs: int, shot, wait_until) -> int:
    """The report's picture alone (``--only-report``): tiles and one short run."""
    first_run(viewer, widget, epochs, wait_until)
    runs_report(widget, shot, wait_until)
    viewer.close()
    return 0


def only_compare(viewer, widget, epochs: int, shot, wait_until) -> int:
    """The comparison's picture alone (``--only-compare``): a short morphology run, then a context run from its
    encoder (one epoch, as the full script), compared in step 5 and scrolled into view."""
    controller = widget.controller
    first_run(viewer, widget, epochs, wait_until)
    widget.augment.panel_a.preset.setCurrentText("context")
    widget.train.init_from.setCurrentIndex(widget.train.init_from.findData("run-001"))
    widget.train.epochs.setValue(1)
    widget.train._train()
    wait_until(lambda: not controller.busy)
    widget.tabs.setCurrentIndex(4)
    widget.runs.compare.pick("run-001", "run-002")
    widget.runs.compare._compare()
    wait_until(lambda: not controller.busy)
    scroll_to(widget.runs.compare)
    shot("16-runs-compare-transforms")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
