"""Study 3a: how close does training get to the model's own speed? Full pipeline vs compute-only ceiling.

*Pipeline*: phenossl's real training loop (``phenossl.train.iter_training``): shuffled batches read from
the memory-mapped tile store, per-sample augmentation on the device, forward, backward, optimizer,
scheduler, momentum / queue update. It yields every ``log_every`` steps after reading the loss (one
device sync), and we time the interval between two yields.

*Ceiling*: the same model, built the same way with the same seed, optimizer, scheduler, mixed precision
and memory format, stepping on views that were augmented beforehand and stay resident on the device:
exactly the trainer's step without loading and augmentation, with the same sync every ``log_every`` steps.

Both run in one process, back to back and interleaved (pipeline window, ceiling window, repeat), and we
report medians and their ratio: on a shared CPU an absolute number from another run would mean little.
A profile times the three parts alone (loader, augmentation, model step) to show what limits the pipeline.

*Before / after* (on a GPU, or with ``--ablation on``): one case (MoCo v2 / ResNet18) run with each of the
fixes that keep a GPU fed switched off in turn, then all of them at once: the store cached on the device,
pinned host memory when it is streamed, channels_last, mixed precision, and batched per-sample augmentation
on the device. The first three and AMP are phenossl settings (``TrainConfig.cache_on_device``,
``channels_last``, ``amp``; streaming always pins) and run through the real trainer; phenossl has no switch
for CPU augmentation, so those rows run the trainer's step in a loop here, fed by an unpinned loader
(``TileBatches(pin_memory=False)``), or by per-sample augmentation on the CPU in the training thread (what a per-sample
torchvision-style pipeline without worker processes does). Each row has its own ceiling (same settings).

    .venv/bin/python benchmarks/speed_training.py --device cuda   # -> results/speed_training_gpu.json
    .venv/bin/python benchmarks/speed_training.py --device cpu --threads 2   # -> results/speed_training.json
    .venv/bin/python benchmarks/speed_training.py --smoke --device cpu --ablation on
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    StudyRecord,
    apply_threads,
    log,
    median,
    resolve_device,
    study_parser,
    synchronize,
    timed,
)

STUDY = "speed_training"


@dataclass(frozen=True)
class SpeedCase:
    method: str
    encoder: str
    resolution: int
    weight_a: float = 1.0  # 1: the morphology composition alone; 0.5: dual loss with context (4 views)
    cache_on_device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    feed: str = "trainer"  # trainer: phenossl's loop; unpinned / cpu_per_sample: see FeedRunner


# --- the tile store ---------------------------------------------------------------------------------------


def synthetic_store(cache_dir: Path, n_cells: int, tile_size: int, channels: int = 3):
    """A store of seeded random tiles (content does not change the cost of any step), built once."""
    import pandas as pd

    from phenossl.tiles.store import TileStore, TileStoreWriter

    path = cache_dir / f"speed-store-{n_cells}x{channels}x{tile_size}"
    if (path / "store.yaml").is_file():
        return TileStore(path)
    log(f"writing a synthetic store of {n_cells} tiles at {tile_size} px: {path}")
    rng = np.random.default_rng(0)
    writer = TileStoreWriter(path, n_cells, [f"ch{i}" for i in range(channels)], tile_size, overwrite=True)
    for start in range(0, n_cells, 256):
        count = min(256, n_cells - start)
        writer.append(rng.random((count, channels, tile_size, tile_size), dtype=np.float32))
    return writer.finish(pd.DataFrame({"label": np.arange(n_cells)}), {"source": "synthetic (benchmark)"})


# --- configuration ------------------------------------------------------------------------------------------


def train_config(case: SpeedCase, args: argparse.Namespace, device):
    from phenossl.config import TrainConfig

    return TrainConfig(
        method=case.method, encoder=case.encoder, composition_a="morphology", composition_b="context",
        weight_a=case.weight_a, epochs=1000,  # never reached: we stop pulling steps long before
        batch_size=args.batch_size, resolution=case.resolution, device=str(device),
        log_every=args.steps, cache_on_device=case.cache_on_device, amp=case.amp,
        channels_last=case.channels_last,
    )


# --- pipeline: the real trainer ------------------------------------------------------------------------------


class PipelineRunner:
    """phenossl's own training generator, paused between timing windows (its loader thread keeps going)."""

    def __init__(self, store, config, run_dir: Path, seed: int = 0):
        from phenossl.train.trainer import iter_training

        self.events = iter_training(store, config, run_dir, seed=seed)

    def window(self) -> tuple[float, float] | None:
        """(wall, process CPU) seconds for the next ``log_every`` steps; None when an epoch ended inside
        (its checkpoint is not a training step)."""
        from phenossl.train.trainer import EpochDone

        start, cpu_start = time.perf_counter(), time.process_time()
        event = next(self.events)
        if isinstance(event, EpochDone):
            next(self.events)
            return None
        return time.perf_counter() - start, time.process_time() - cpu_start

    def close(self) -> None:
        self.events.close()  # runs the trainer's finally: frees the model and the device cache


# --- ceiling: the same step on resident views ------------------------------------------------------------------


class CeilingRunner:
    """The trainer's step (forward, loss, backward, optimizer, scheduler, momentum) on pre-augmented views.

    Built as ``iter_training`` builds its model (same seed, memory format, optimizer, schedule, AMP), so the
    only difference from the pipeline is where the views come from.
    """

    def __init__(self, store, config, device, seed: int = 0, n_view_batches: int = 4):
        import torch

        from phenossl.train.loader import TileBatches
        from phenossl.train.steps import make_step
        from phenossl.methods.build import build_model

        torch.manual_seed(seed)
        self.device, self.config = device, config
        self.model, augmenters = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells)
        self.augmenters = augmenters
        batches = TileBatches(store.tiles, config.batch_size, device, seed=seed + 1, cache_on_device="never")
        self.steps_per_epoch = batches.steps_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch
        model = self.model.to(device)
        if device.type == "cuda" and config.channels_last:
            model.to(memory_format=torch.channels_last)
        warmup = int(round(config.warmup_epochs * self.steps_per_epoch))
        self.update = make_step(model, augmenters, config, device, self.total_steps, warmup)  # the trainer's own
        generator = torch.Generator(device=device).manual_seed(seed)
        self.views = [make_views(batch, augmenters, config, device, generator)
                      for batch in itertools.islice(batches.epoch(0), n_view_batches)]
        self.step_index = 0
        model.train()

    def step(self, views: dict | None = None):
        """One training step on ``views`` (default: the next pre-augmented batch): the trainer's own update
        (forward, dual loss, backward, optimizer, scheduler, momentum) without making the views."""
        if views is None:
            views = self.views[self.step_index % len(self.views)]
        self.step_index += 1
        return self.update.optimise(views, None, self.step_index / self.total_steps)

    def window(self) -> tuple[float, float]:
        """(wall, process CPU) seconds for ``log_every`` steps, ending with the trainer's per-report reads of
        the losses."""
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(self.config.log_every):
            total, losses = self.step()
        float(total.detach())
        {name: float(value.detach()) for name, value in losses.items()}
        return time.perf_counter() - start, time.process_time() - cpu_start


# --- before / after: feeds phenossl has no switch for ----------------------------------------------------------


class FeedRunner:
    """The trainer's step (CeilingRunner's) fed every step by a data path phenossl does not offer:

    - ``unpinned``: batches streamed from the store by phenossl's loader thread, but left in pageable host
      memory (a synchronous copy to the device), then augmented on the device as the trainer does;
    - ``cpu_per_sample``: batches read on the host, each sample augmented on its own on the CPU in the
      training thread (phenossl's Augmenter on one tile at a time, a CPU generator), the views then copied to
      the device (pageable memory).
    """

    def __init__(self, store, config, device, feed: str, seed: int = 0):
        import torch

        from phenossl.train.loader import TileBatches

        if feed not in ("unpinned", "cpu_per_sample"):
            raise ValueError(f"unknown feed {feed!r}")
        self.runner = CeilingRunner(store, config, device, seed=seed, n_view_batches=0)
        self.config, self.device, self.feed = config, device, feed
        host = device if feed == "unpinned" else torch.device("cpu")
        self.batches = TileBatches(store.tiles, config.batch_size, host, seed=seed, cache_on_device="never",
                                   pin_memory=False)
        self.generator = torch.Generator(device=host).manual_seed(seed)
        self._epochs = itertools.count()
        self._iterator = iter(())

    def _next_batch(self):
        while True:
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = self.batches.epoch(next(self._epochs))

    def _views(self) -> dict:
        import torch

        x = self._next_batch().float()
        if self.feed == "unpinned":
            return make_views(x, self.runner.augmenters, self.config, self.device, self.generator)
        views = {}
        for name, augment in self.runner.augmenters.items():
            pair = []
            for _ in range(2):
                view = torch.cat([augment(x[i:i + 1], self.generator).views for i in range(len(x))])
                view = view.to(self.device)
                if self.device.type == "cuda" and self.config.channels_last:
                    view = view.contiguous(memory_format=torch.channels_last)
                pair.append(view)
            views[name] = tuple(pair)
        return views

    def window(self) -> tuple[float, float]:
        """(wall, process CPU) seconds for ``log_every`` steps, with the trainer's per-report loss reads."""
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(self.config.log_every):
            total, losses = self.runner.step(self._views())
        float(total.detach())
        {name: float(value.detach()) for name, value in losses.items()}
        return time.perf_counter() - start, time.process_time() - cpu_start

    def close(self) -> None:
        self._iterator = iter(())
        del self.runner


def make_views(batch, augmenters, config, device, generator) -> dict:
    """Two augmented views per branch of one batch, as the trainer makes them."""
    import torch

    x = batch.float()
    if device.type == "cuda" and config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return {name: (augment(x, generator).views, augment(x, generator).views) for name, augment in augmenters.items()}


# --- profile ---------------------------------------------------------------------------------------------------------


def profile_parts(store, config, device, steps: int, seed: int = 0) -> dict[str, float]:
    """Seconds per step of each part on its own: loader (store -> device batch), augmentation, (model: the ceiling)."""
    import torch

    from phenossl.augment.pipeline import Augmenter
    from phenossl.train.loader import TileBatches

    batches = TileBatches(store.tiles, config.batch_size, device, seed=seed + 2,
                          cache_on_device=config.cache_on_device)
    iterator = batches.epoch(0)
    next(iterator)  # thread start, first read
    load_seconds, _ = timed(lambda: [next(iterator).float() for _ in range(steps)], device)
    augmenters = {name: Augmenter(comp, config.resolution) for name, comp in config.compositions().items()}
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = next(iterator)
    make_views(batch, augmenters, config, device, generator)  # warm-up (kernels, allocator)
    augment_seconds, _ = timed(lambda: [make_views(batch, augmenters, config, device, generator)
                                        for _ in range(steps)], device)
    del iterator, batches
    return {"load_s_per_step": load_seconds / steps, "augment_s_per_step": augment_seconds / steps}


# --- one case ------------------------------------------------------------------------------------------------------


def measure_case(case: SpeedCase, store, args: argparse.Namespace, device, work: Path,
                 profile_parts_too: bool = True) -> dict[str, Any]:
    """Interleaved pipeline / ceiling windows (after warm-up windows of each), medians, ratio, profile."""
    import torch

    config = train_config(case, args, device)
    cells_per_window = config.batch_size * config.log_every
    if case.feed == "trainer":
        run_dir = work / "-".join(str(v) for v in asdict(case).values())
        pipeline = PipelineRunner(store, config, run_dir)
    else:
        pipeline = FeedRunner(store, config, device, case.feed)
    try:
        ceiling = CeilingRunner(store, config, device)
        for _ in range(args.warmup):
            pipeline.window()
            ceiling.window()
        pairs = []  # (pipeline (wall, cpu), ceiling (wall, cpu)) of adjacent windows
        for _ in range(args.repeats):
            seconds = pipeline.window()
            if seconds is not None:
                pairs.append((seconds, ceiling.window()))
        del ceiling
    finally:
        pipeline.close()
    profile = profile_parts(store, config, device, args.steps) if profile_parts_too else None
    pipeline_times, ceiling_times = [p[0] for p, _ in pairs], [c[0] for _, c in pairs]
    pipeline_cpu, ceiling_cpu = [p[1] for p, _ in pairs], [c[1] for _, c in pairs]
    pipeline_rate = cells_per_window / median(pipeline_times)
    ceiling_rate = cells_per_window / median(ceiling_times)
    if profile is not None:
        profile["model_s_per_step"] = median(ceiling_times) / config.log_every
        profile["pipeline_s_per_step"] = median(pipeline_times) / config.log_every
        parts = profile["load_s_per_step"] + profile["augment_s_per_step"] + profile["model_s_per_step"]
        profile["shares_of_parts"] = {key.replace("_s_per_step", ""): profile[key] / parts
                                      for key in ("load_s_per_step", "augment_s_per_step", "model_s_per_step")}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        **asdict(case),
        "batch_size": config.batch_size,
        "views_per_cell": 2 * len(config.compositions()),
        "pipeline_cells_per_s": pipeline_rate,
        "ceiling_cells_per_s": ceiling_rate,
        "ratio": pipeline_rate / ceiling_rate,
        # each pipeline window against the ceiling window right after it (same load on a shared machine)
        "paired_ratio_median": median([c / p for p, c in zip(pipeline_times, ceiling_times)]),
        # CPU time of the whole process (incl. the loader thread): robust to other jobs taking the CPU away;
        # meaningless on a GPU, where the work is not on the CPU
        "cpu_time_ratio": median(ceiling_cpu) / median(pipeline_cpu),
        "pipeline_window_s": pipeline_times,
        "ceiling_window_s": ceiling_times,
        "pipeline_window_cpu_s": pipeline_cpu,
        "ceiling_window_cpu_s": ceiling_cpu,
        "profile": profile,
    }


def cases(args: argparse.Namespace, device) -> list[SpeedCase]:
    """The grid: every method x encoder x resolution with one composition, the dual loss for MoCo v2 /
    ResNet18, and on a GPU the same with the store streamed from host memory (no device cache).

    On a CPU (unless --full-grid) VGG13 runs with the first method only: its trunk costs ~6x ResNet18's, the
    methods differ only by their small heads, and the whole grid would take hours on two cores."""
    reduced = device.type == "cpu" and not args.full_grid
    grid = [SpeedCase(m, e, r) for r in args.resolutions for e in args.encoders
            for m in (args.methods[:1] if reduced and e == "vgg13" else args.methods)]
    if not args.smoke:
        grid += [SpeedCase("mocov2", "resnet18", r, weight_a=0.5) for r in args.resolutions]
    if device.type == "cuda" and not args.smoke:
        grid += [SpeedCase(m, "resnet18", r, cache_on_device="never") for r in args.resolutions
                 for m in ("mocov2",)]
    return grid


#: (row, what changes from phenossl's defaults); "after" first, "before" (all off) last
ABLATION = [
    ("after: phenossl defaults (store cached on the device, batched augmentation on the device, "
     "channels_last, mixed precision)", {}),
    ("store streamed from host memory (pinned; phenossl's path when the store does not fit)",
     {"cache_on_device": "never"}),
    ("streamed, not pinned", {"cache_on_device": "never", "feed": "unpinned"}),
    ("no channels_last", {"channels_last": False}),
    ("no mixed precision", {"amp": False}),
    ("augmentation per sample on the CPU (streamed, not pinned)",
     {"cache_on_device": "never", "feed": "cpu_per_sample"}),
    ("before: all of these off", {"cache_on_device": "never", "feed": "cpu_per_sample", "amp": False,
                                  "channels_last": False}),
]


def ablation_cases(args: argparse.Namespace, device) -> list[tuple[str, SpeedCase]]:
    """The before / after rows: on a GPU (--ablation auto), or anywhere with --ablation on (the smoke test
    runs them on a CPU, where only the code path means something)."""
    if args.ablation == "off" or (args.ablation == "auto" and device.type != "cuda"):
        return []
    resolution = args.ablation_resolution or (args.resolutions[0] if args.smoke else 128)
    rows = [ABLATION[0], ABLATION[2], ABLATION[-1]] if args.smoke else ABLATION  # every feed, every switch
    return [(name, SpeedCase("mocov2", "resnet18", resolution, **changes)) for name, changes in rows]


def run_ablation(args: argparse.Namespace, store, device, work: Path) -> list[dict[str, Any]]:
    rows = []
    for name, case in ablation_cases(args, device):
        log(f"before/after: {name}")
        result = {"variant": name, **measure_case(case, store, args, device, work / "ablation",
                                                  profile_parts_too=False)}
        result["vs_defaults"] = result["pipeline_cells_per_s"] / (rows[0] if rows else result)["pipeline_cells_per_s"]
        log(f"    pipeline {result['pipeline_cells_per_s']:.1f} cells/s, ceiling {result['ceiling_cells_per_s']:.1f}"
            f" -> {100 * result['ratio']:.0f} %; {100 * result['vs_defaults']:.0f} % of the defaults' pipeline")
        rows.append(result)
        synchronize(device)
    return rows


def parse_args(argv: list[str] | None, device_default: str = "auto") -> argparse.Namespace:
    parser = study_parser(STUDY, __doc__.split("\n\n")[0], needs_data=False)
    parser.add_argument("--methods", nargs="+", default=["mocov2", "simclr", "byol", "vicreg"])
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "vgg13"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[96, 128, 196])
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on a GPU, 16 on a CPU")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timing window = the trainer's log_every (default: 10 GPU, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved windows (default: 7 GPU, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed windows of each first (default: 2 GPU, 1 CPU)")
    parser.add_argument("--tile-size", type=int, default=196, help="tile size of the store (the product's default)")
    parser.add_argument("--full-grid", action="store_true", help="on a CPU too: VGG13 with every method")
    parser.add_argument("--ablation", choices=("auto", "on", "off"), default="auto",
                        help="the before / after rows (each GPU-feeding fix off in turn): auto = on a GPU only")
    parser.add_argument("--ablation-resolution", type=int, default=None, help="their resolution (default 128 px)")
    parser.add_argument("--skip-grid", action="store_true", help="only the before / after rows")
    args = parser.parse_args(argv)
    if args.smoke:
        args.methods, args.encoders, args.resolutions, args.tile_size = ["mocov2"], ["resnet18"], [32], 48
    return args


def fill_defaults(args: argparse.Namespace, device) -> None:
    gpu = device.type == "cuda"
    smoke = args.smoke
    args.batch_size = args.batch_size or (4 if smoke else 128 if gpu else 16)
    args.steps = args.steps or (1 if smoke else 10 if gpu else 2)
    args.repeats = args.repeats or (1 if smoke else 7 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke or not gpu else 2)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_threads(args)
    device = resolve_device(args.device)
    fill_defaults(args, device)
    record = StudyRecord(STUDY, args, device, argv, result_name=f"{STUDY}_gpu" if device.type == "cuda" else STUDY)
    # one epoch must hold every timed step (an epoch end writes a checkpoint: not a training step)
    n_cells = args.batch_size * args.steps * (args.warmup + args.repeats + 2)
    store = synthetic_store(args.cache_dir, max(n_cells, 2 * args.batch_size), args.tile_size)
    work = args.cache_dir / "speed-runs"
    results = []
    for case in [] if args.skip_grid else cases(args, device):
        log(f"{case}")
        result = measure_case(case, store, args, device, work)
        log(f"    pipeline {result['pipeline_cells_per_s']:.1f} cells/s, ceiling {result['ceiling_cells_per_s']:.1f}"
            f" -> {100 * result['ratio']:.0f} % (paired {100 * result['paired_ratio_median']:.0f} %, CPU time "
            f"{100 * result['cpu_time_ratio']:.0f} %); parts/step: load {result['profile']['load_s_per_step']:.3f} s, "
            f"augment {result['profile']['augment_s_per_step']:.3f} s, model {result['profile']['model_s_per_step']:.3f} s")
        results.append(result)
        synchronize(device)
    ablation = run_ablation(args, store, device, work)
    settings = {
        "batch_size": args.batch_size, "steps_per_window": args.steps, "repeats": args.repeats,
        "warmup_windows": args.warmup, "tile_size": args.tile_size, "store_cells": store.n_cells,
        "store": "synthetic random float16 tiles in a phenossl TileStore (memmap)",
        "compositions": "morphology preset (weight 1); dual rows: morphology + context at w = 0.5",
        "amp": "phenossl default (bfloat16/float16 autocast on CUDA, none on CPU)",
        "ablation": "mocov2 / resnet18, each GPU-feeding fix off in turn (see the module docstring)"
                    if ablation else "not run (GPU only, or --ablation on)",
    }
    notes = []
    if device.type == "cpu":
        notes.append("CPU run: the loader thread, the augmentation and the model share the same cores, so the "
                     "pipeline cannot overlap them; a GPU run (--device cuda) fills the GPU columns.")
    if ablation and device.type != "cuda":
        notes.append("The before / after rows ran on a CPU (--ablation on): channels_last and mixed precision "
                     "are GPU-only in phenossl and pinning needs a GPU, so those rows only check the code path.")
    return record.finish(settings, {"cases": results, "ablation": ablation}, notes)


if __name__ == "__main__":
    main()
