"""The ``phenossl`` command: one subcommand per stage, ``run`` for the whole chain, ``demo`` for a tour.

Errors the user can fix (PhenosslError) are printed as one clear message with exit status 2, never
as a traceback; Ctrl-C during training keeps the last checkpoint and says how to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from phenossl.errors import PhenosslError


def _progress(args: argparse.Namespace):
    """What a command prints while its stages work (phenossl.cli_progress): bars on a terminal, plain lines
    in a log; every reported training step too with --verbose."""
    from phenossl.cli_progress import CliProgress

    return CliProgress(verbose=getattr(args, "verbose", False))


def _load(path: str, overrides: list[str] | None = None):
    from phenossl.config import apply_overrides, load_config

    config = load_config(path)
    return apply_overrides(config, overrides or [])


def _run_lock(config, what: str):
    """The run folder's lock (see phenossl.runlock), held while a command writes into it."""
    from phenossl.config import resolve_paths
    from phenossl.runlock import run_folder_lock

    return run_folder_lock(resolve_paths(config, Path.cwd()).run_dir(), what)


def _print_result(result) -> None:
    print(f"\n{result.n_cells} cells in {len(result.cluster_sizes)} clusters (sizes {result.cluster_sizes})")
    for name, value in result.metrics.items():
        print(f"  {name}: {value:.3f}")
    print(f"\nResults in {result.paths.root}:")
    for path in (result.paths.clusters, result.paths.overview, result.paths.embeddings, result.paths.config):
        if path.exists():
            print(f"  {path}")


def cmd_run(args: argparse.Namespace) -> int:
    from phenossl.pipeline import run_pipeline

    config = _load(args.config, args.set)
    if args.overwrite:
        config.output.overwrite = True
    print(f"phenossl run '{config.name}' -> {config.run_dir()}")
    with _progress(args) as on_event:
        result = run_pipeline(config, resume=args.resume, on_event=on_event)
    _print_result(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from phenossl.demo import demo_config
    from phenossl.pipeline import run_pipeline

    config = demo_config(out=Path(args.out), epochs=args.epochs, overwrite=args.overwrite, device=args.device)
    print(f"phenossl demo: the bundled synthetic plate ({config.input.paths[0]})\n"
          f"  training {config.train.method} / {config.train.encoder} for {config.train.epochs} epochs "
          f"with the '{config.train.composition_a.name}' composition; results in {config.run_dir()}")
    with _progress(args) as on_event:
        result = run_pipeline(config, on_event=on_event)
    _print_result(result)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from phenossl.config import RunConfig, apply_overrides

    config = _load(args.config, args.set) if args.config else apply_overrides(RunConfig(), args.set or [])
    print(config.to_yaml(), end="")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from phenossl.io import discover_fields, read_field

    sources = discover_fields(args.paths, pattern=args.pattern)
    print(f"{len(sources)} field(s)")
    for source in sources[: args.limit]:
        fld = read_field(source, lazy=True)  # OME-Zarr and microscope files: metadata only
        pixel = "" if fld.pixel_size is None else f" pixel={fld.pixel_size[0]:g}x{fld.pixel_size[1]:g}um"
        print(f"  {fld.key}: plate={fld.plate} well={fld.well} site={fld.site} "
              f"channels={fld.channel_names} shape={fld.image.shape[1:]} dtype={fld.image.dtype}{pixel}")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from phenossl.synthetic_cli import write_from_arguments

    print(write_from_arguments(args, args.out))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile

    from phenossl.atomic import atomic_write, check_can_write
    from phenossl.config import SegmentConfig
    from phenossl.io import discover_fields, read_field
    from phenossl.tiles.build import segment_field

    segmentation = SegmentConfig(backend=args.backend, diameter=args.diameter, model=args.model,
                                 weights=args.weights)
    out = Path(args.out)
    sources = discover_fields(args.paths, pattern=args.pattern)
    targets = [out / f"{s.key.replace('/', '_')}_nuclei.tif" for s in sources]
    for target in targets:
        check_can_write(target, args.overwrite)  # all checked before anything is written
    for source, target in zip(sources, targets):
        labels = segment_field(read_field(source), args.nuclear_channel, segmentation)
        atomic_write(target, lambda tmp, lab=labels: tifffile.imwrite(tmp, lab.astype(np.int32), compression="zlib"),
                     overwrite=args.overwrite)
        print(f"  {source.key}: {int(labels.max())} nuclei -> {target}")
    return 0


def cmd_tile(args: argparse.Namespace) -> int:
    from phenossl.pipeline import prepare_run_dir, stage_tile

    config = _load(args.config, args.set)
    if args.overwrite:
        config.output.overwrite = True
    with _run_lock(config, "phenossl tile"), _progress(args) as on_event:
        paths = prepare_run_dir(config, resume=True)
        store = stage_tile(config, paths, on_event=on_event, scheduler=args.scheduler)
    report = store.info.get("report", {})
    print(f"{store.n_cells} cells in {paths.store} ({report})")
    tiling = store.info.get("tiling") if args.scheduler else None
    if tiling:  # a Dask build: what this command did, and what it took from the shards of an earlier one
        print(f"  Dask ({tiling['scheduler']}): {tiling['fields_segmented']} field(s) segmented, "
              f"{tiling['fields_reused']} reused from an earlier run's shards, {tiling['fields_tiled']} tiled")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from phenossl.pipeline import prepare_run_dir, stage_train
    from phenossl.tiles.store import TileStore

    config = _load(args.config, args.set)
    if args.overwrite:
        config.output.overwrite = True
    with _run_lock(config, "phenossl train"), _progress(args) as on_event:
        paths = prepare_run_dir(config, resume=True)  # the run's config.yaml must say what was trained
        result = stage_train(config, paths, TileStore(paths.store), resume=args.resume, overwrite=args.overwrite,
                             on_event=on_event)
    print(f"trained {result.epochs_completed} epochs on {result.device}; checkpoint {result.checkpoint}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from phenossl.pipeline import open_run, stage_embed

    config, paths, store = open_run(args.run)
    with _progress(args) as on_event:
        embeddings = stage_embed(config, paths, store, overwrite=args.overwrite, on_event=on_event)
    print(f"embeddings {embeddings.shape} -> {paths.embeddings}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from phenossl.cluster.stage import command_line_choice, record_command_line_choice
    from phenossl.pipeline import open_run, stage_cluster

    config, paths, store = open_run(args.run)
    out = Path(args.out) if args.out else None
    # --algorithm, --min-cluster-size, --k N or auto: validated as the configuration is (the same one-line messages)
    config, curve = command_line_choice(config, paths, store, k=args.k, algorithm=args.algorithm,
                                        min_cluster_size=args.min_cluster_size, label=args.label, out=out,
                                        overwrite=args.overwrite)
    with _progress(args) as on_event:
        result = stage_cluster(config, paths, store, csv_path=out, overwrite=args.overwrite, on_event=on_event)
    _print_result(result)
    if curve is not None:
        print(f"  k auto: {curve.describe()}")
    for path in record_command_line_choice(config, paths, curve, out=out, overwrite=args.overwrite):
        print(f"  {path}")
    if out:
        print(f"  exported {out} (with its embeddings and configuration beside it)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from phenossl.pipeline import open_run, stage_export

    config, paths, store = open_run(args.run)
    out = Path(args.out)
    result = stage_export(config, paths, store, out, overwrite=args.overwrite, fmt=args.format)
    if result is not None:
        _print_result(result)
        print("  (the run had no clustering of its current embeddings: clustered as its configuration says)")
    written = {"csv": f"{out} (with its embeddings and configuration beside it)",
               "h5ad": f"{out} (AnnData: obsm['X_phenossl'] is the embedding, obs['cluster'] the clusters)",
               "profiles": f"{out / 'cells.csv'} and {out / 'wells.csv'} (per cell, and the median per well)"}
    print(f"  exported {written[args.format]}")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    import numpy as np

    from phenossl.augment.specs import load_composition, save_composition

    composition = load_composition(args.composition)
    print(composition.to_yaml(), end="")
    if args.save:
        save_composition(composition, args.save, overwrite=args.overwrite)
        print(f"  saved {args.save}")
    if args.preview:
        from phenossl.tiles.store import TileStore
        from phenossl.views_sheet import plot_views_sheet

        root = Path(args.preview)
        store = TileStore(root / "store" if (root / "store").is_dir() else root)
        if args.cells:
            ids = [int(i) for i in args.cells.split(",")]
            bad = [i for i in ids if not 0 <= i < store.n_cells]
            if bad:
                from phenossl.errors import InputError

                raise InputError(f"cell(s) {bad} are not in the store (it has cells 0..{store.n_cells - 1})")
        else:
            ids = np.unique(np.linspace(0, store.n_cells - 1, min(4, store.n_cells)).astype(int)).tolist()
        out = Path(args.png or f"{composition.name}-views.png")
        from phenossl.augment.specs import resolve_composition

        composition = resolve_composition(composition, store.nucleus_diameter, store.tile_size)
        plot_views_sheet(out, store.tiles[ids], ids, composition, n_views=args.views, seed=args.seed,
                         out_size=args.resolution, overwrite=args.overwrite)
        print(f"  {len(ids)} cells x {args.views} views -> {out}")
    return 0


def cmd_dose_response(args: argparse.Namespace) -> int:
    from phenossl.perturbation import parse_selector
    from phenossl.pipeline import open_run, stage_dose_response

    config, paths, store = open_run(args.run)
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    out = Path(args.out) if args.out else None
    table, axis = stage_dose_response(config, paths, store, control=parse_selector(args.control),
                                      reference=parse_selector(args.reference), by=by, csv_path=out,
                                      overwrite=args.overwrite)
    print(f"on-perturbation axis: {axis.n_control} control cells (score 0) -> {axis.n_reference} reference "
          "cells (score 1)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        print(f"  exported {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from phenossl.evaluate import EvaluationSettings, parse_k
    from phenossl.pipeline import evaluate_runs

    settings = EvaluationSettings(label=args.label, within=args.within, k=parse_k(args.k), controls=args.controls,
                                  seeds=args.seeds)
    table, markdown, written = evaluate_runs([Path(r) for r in args.runs], settings,
                                             out=Path(args.out) if args.out else None, overwrite=args.overwrite)
    print(markdown, end="")
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from phenossl.report import run_report

    report = run_report(args.run, k=args.k, overwrite=args.overwrite)
    print(report.markdown, end="")
    print("\nwritten: " + ", ".join(str(p) for p in report.written))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from phenossl.report.compare_run import comparison_markdown, compare_run_folders

    difference = compare_run_folders(args.run_a, args.run_b, out=args.out, overwrite=args.overwrite)
    print(comparison_markdown(difference), end="")
    print("\nwritten: " + ", ".join(str(p) for p in difference.written))
    return 0


def _choices_help() -> str:
    """The registered methods and encoders (``--set train.method=NAME``), from their registries."""
    from phenossl.methods.registry import methods_help
    from phenossl.models.registry import encoder_names

    return (f"training methods (--set train.method=NAME):\n{methods_help()}\n"
            f"encoders (--set train.encoder=NAME): {', '.join(encoder_names())}")


def _algorithms_help() -> str:
    from phenossl.cluster.algorithms import algorithms_help

    return f"clustering algorithms (--algorithm NAME):\n{algorithms_help()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phenossl",
        description="Microscopy phenotype discovery with self-supervised learning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show log messages and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="run configuration (YAML); see examples/")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a setting, e.g. --set train.epochs=5 (repeatable)")

    p = sub.add_parser("run", help="the whole chain: segment, tile, train, embed, cluster, export",
                       epilog=_choices_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    with_config(p)
    p.add_argument("--resume", action="store_true", help="continue a run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run everything on the bundled synthetic plate (a few minutes on a CPU)")
    p.add_argument("--out", default="phenossl-demo", help="run folder (default: ./phenossl-demo)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("config", help="print the full configuration (every key and default) as YAML")
    p.add_argument("config", nargs="?", help="a configuration to complete with defaults (default: none)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("inspect", help="list the fields and channels phenossl finds in images")
    p.add_argument("paths", nargs="+")
    p.add_argument("--pattern", default="auto", help="auto, bbbc021, imagexpress or a regex")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("synthetic", help="write a synthetic plate (TIFF files or an OME-Zarr plate) to see the layout")
    p.add_argument("out", type=Path, help="folder to write the plate into")
    from phenossl.synthetic_cli import add_plate_arguments

    add_plate_arguments(p)
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser("segment", help="segment nuclei and write one label TIFF per field")
    p.add_argument("paths", nargs="+")
    p.add_argument("--out", required=True, help="folder for the label images")
    p.add_argument("--nuclear-channel", default="0", help="name or index of the nuclear stain")
    p.add_argument("--backend", choices=["classical", "cellpose"], default="classical")
    p.add_argument("--diameter", type=float, default=None)
    p.add_argument("--model", default="cpsam_v2")
    p.add_argument("--weights", default=None, help="local cellpose weights file")
    p.add_argument("--pattern", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("tile", help="read, segment and tile into the run's tile store")
    with_config(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing tile store")
    p.add_argument("--scheduler", default=None, metavar="local:N|tcp://HOST:PORT",
                   help="segment and tile the fields as Dask tasks: local:N starts N worker processes here, an "
                   "address uses a running Dask cluster (docs/scaling.md); the store is the one a serial run makes")
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser("compose", help="show a transformation composition as YAML, save it, or preview its views")
    p.add_argument("composition", help="a preset (morphology, context, none) or a composition YAML file")
    p.add_argument("--save", default=None, metavar="FILE.yaml", help="write the full composition here")
    p.add_argument("--preview", default=None, metavar="RUN_OR_STORE",
                   help="draw random views of cells of this run folder (or tile store) into a PNG")
    p.add_argument("--cells", default=None, metavar="ID[,ID]", help="cell ids to preview (default: 4 spread out)")
    p.add_argument("--views", type=int, default=6, help="views per cell")
    p.add_argument("--resolution", type=int, default=96, help="view size in px (the training resolution)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", default=None, help="the preview PNG (default: <name>-views.png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("train", help="train the self-supervised encoder on the run's tile store",
                       epilog=_choices_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    with_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the last completed epoch")
    p.add_argument("--overwrite", action="store_true", help="train again from scratch, replacing the model")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="embed every cell of a trained run")
    p.add_argument("run", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing embeddings")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("cluster", help="(re)cluster a run's cached embeddings and export the CSV",
                       epilog=_algorithms_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder")
    p.add_argument("--k", default=None, help="number of clusters (default: the run's), or auto: the best silhouette "
                   "of k=2..15 on a seeded sample (the curve is written to k_curve.csv)")
    p.add_argument("--algorithm", default=None, help="kmeans, gmm or hdbscan (default: the run's cluster.algorithm)")
    p.add_argument("--min-cluster-size", type=int, default=None, help="hdbscan: the smallest cluster, in cells")
    p.add_argument("--label", default=None, metavar="COLUMN",
                   help="with --k auto: also score each k's AMI against this column of the cell table")
    p.add_argument("--out", default=None, help="export the CSV (with embeddings and config beside it) here "
                   "instead of replacing the run's own clustering")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export / the run's clustering")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("export", help="export a run's clustering (its own k and seed): CSV, AnnData or profiles")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=("csv", "h5ad", "profiles"), default="csv",
                   help="csv (default): the per-cell CSV, embeddings and configuration beside it; h5ad: one AnnData "
                   "file for scanpy; profiles: a folder with cells.csv and wells.csv in pycytominer's conventions")
    p.add_argument("--out", required=True, help="the CSV / the .h5ad file / the profiles folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("dose-response", help="score cells on the control -> perturbation axis, per treatment and dose")
    p.add_argument("run", help="run folder (with embeddings)")
    p.add_argument("--control", required=True, metavar="COL=VALUE[,...]", help="the control cells, e.g. compound=DMSO")
    p.add_argument("--reference", required=True, metavar="COL=VALUE[,...]",
                   help="the reference perturbation (score 1), e.g. compound=cycloheximide,concentration=50")
    p.add_argument("--by", default=None, metavar="COL[,COL]",
                   help="group the scores by these columns (default: the reference's columns)")
    p.add_argument("--out", default=None, help="write the table as CSV here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=cmd_dose_response)

    p = sub.add_parser("evaluate", help="does training beat measuring? score runs side by side against a label")
    p.add_argument("runs", nargs="+", help="run folders (with embeddings): trained, cellprofiler, random-init...")
    p.add_argument("--label", required=True, help="the cell table's column to separate, e.g. compound")
    p.add_argument("--within", default=None, metavar="COLUMN",
                   help="also score inside each group of this column (e.g. plate), K-Means refitted per group; "
                        "1-NN then leaves one group out")
    p.add_argument("--k", default="auto", help="clusters (default auto: the number of label values)")
    p.add_argument("--controls", default=None, metavar="COL=VALUE",
                   help="also score with each plate standardised to its own negative controls, e.g. compound=DMSO")
    p.add_argument("--seeds", type=int, default=5, help="K-Means seeds averaged (default 5)")
    p.add_argument("--out", default=None, metavar="PREFIX",
                   help="write PREFIX.csv and PREFIX.md (default: evaluation-<label> beside the runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="what do the clusters follow? density, size, stains, plate position and "
                       "treatments scored side by side (CSV, Markdown and PNG beside the run)")
    p.add_argument("run", help="run folder (with embeddings and, without --k, its clustering)")
    p.add_argument("--k", type=int, default=None, help="report a new K-Means with k clusters instead of the run's "
                   "own clustering (written as report-kK.*)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="which transform moved which cluster? two runs of the same cells: where "
                       "each cluster went, what B's clusters follow more or less than A's, the cells that moved, "
                       "and what B was made with differently")
    p.add_argument("run_a", help="the first run folder (with its clustering)")
    p.add_argument("run_b", help="the second run folder, of the same cells")
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="write compare-<A>.* here (default: run B's folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing comparison")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except PhenosslError as exc:
        if args.verbose:
            raise
        print(f"phenossl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nphenossl: interrupted. Checkpoints written so far are kept; continue with --resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
