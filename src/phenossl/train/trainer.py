"""The self-supervised training loop.

Written as a generator (:func:`iter_training`) that yields progress after every reported step and
after every epoch, so that a napari ``thread_worker`` can show progress and stop it between two
steps, while :func:`train` simply runs it to the end for the CLI. The worker thread runs only this
code: it never touches layers or widgets.

Guarantees, whatever happens: a checkpoint is written atomically at the end of every epoch (the last
good one survives a crash, a NaN or a cancel); a NaN loss, a collapsed representation or an
out-of-memory error stops the run with a message that says what to change; GPU memory is released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.atomic import atomic_write
from phenossl.config import TrainConfig
from phenossl.errors import (
    Cancelled,
    CollapseError,
    DeviceOutOfMemoryError,
    DiskFullError,
    DivergedError,
    InputError,
)
from phenossl.methods.build import build_model
from phenossl.tiles.store import TileStore
from phenossl.train.checkpoint import encoder_state_of, load_checkpoint, save_checkpoint
from phenossl.train.devices import is_out_of_memory, resolve_device
from phenossl.train.labels import training_labels
from phenossl.train.loader import TileBatches
from phenossl.train.monitors import embedding_spread, is_finite

CHECKPOINT_FILE = "checkpoint.pt"
logger = logging.getLogger(__name__)
HISTORY_FILE = "history.csv"
PROBE_CELLS = 256


@dataclass(frozen=True)
class StepProgress:
    """Reported every ``log_every`` steps. ``images_per_s`` counts cells (each gives 2 views per branch)."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    branch_losses: dict[str, float]
    images_per_s: float
    lr: float


@dataclass(frozen=True)
class SetUp:
    """What training is about to do before its first step (the first seconds of a run: loading PyTorch, building
    the model, starting the batches, the first batch). Yielded *before* the phase runs, so a front end can say
    what is happening while it happens; one of each :data:`SETUP_PHASES`, in that order."""

    phase: str
    text: str


#: The set-up phases :func:`iter_training` reports, in order (each once per run, before its first step).
SETUP_PHASES = ("device", "model", "batches", "probe", "first-step")


@dataclass(frozen=True)
class EpochDone:
    epoch: int
    epochs: int
    mean_loss: float
    spread: float
    checkpoint: Path


@dataclass
class TrainResult:
    checkpoint: Path
    epochs_completed: int
    device: str
    history: pd.DataFrame = field(repr=False)


def resolve_for_store(config: TrainConfig, store: TileStore) -> TrainConfig:
    """``config`` with its size-aware settings made numbers for this store's tiles (a centre crop of fraction
    ``auto`` keeps about three of its nuclei's diameters); the checkpoint saves the result."""
    from phenossl.augment.specs import resolve_composition

    diameter, size = store.nucleus_diameter, store.tile_size
    a = resolve_composition(config.composition_a, diameter, size)
    b = resolve_composition(config.composition_b, diameter, size)
    if a is config.composition_a and b is config.composition_b:
        return config
    return config.model_copy(update={"composition_a": a, "composition_b": b})


def warn_if_upsampled(config: TrainConfig, store: TileStore) -> None:
    """A training resolution above what the tiles show (the centre crop of the main composition) only upsamples:
    nothing is gained and each step costs more. Said as a warning (the run goes on)."""
    from phenossl.augment.specs import kept_fraction

    shown = store.tile_size * kept_fraction(config.main_composition().transforms)
    if config.resolution > shown * 1.05:
        logger.warning(
            "train.resolution %d px upsamples the %.0f px the views show (%d px tiles%s): nothing is gained and each "
            "step costs about %.0fx more; train.resolution: %d would do.", config.resolution, shown, store.tile_size,
            "" if shown == store.tile_size else ", centre crop", (config.resolution / shown) ** 2, int(shown))


def report_every(config: TrainConfig, device_type: str | None = None) -> int:
    """Steps between two progress reports: ``train.log_every``, else every step on the CPU (steps are slow there)
    and every 10 on an accelerator (each report reads the loss back, a device sync)."""
    if config.log_every:
        return config.log_every
    device_type = device_type or resolve_device(config.device).type
    return 1 if device_type == "cpu" else 10


def is_report_step(step: int, steps_per_epoch: int, every: int) -> bool:
    """Whether :func:`iter_training` reports after ``step`` (1-based): every ``every`` steps and the epoch's last."""
    return step % every == 0 or step == steps_per_epoch


def expected_events(n_cells: int, config: TrainConfig, *, set_up_events: bool = False) -> int:
    """How many events :func:`iter_training` yields from scratch (the reports, one per epoch, and with
    ``set_up_events`` the set-up phases): a progress bar's total."""
    steps = n_cells // min(config.batch_size, n_cells)  # TileBatches' rule: full batches only
    every = report_every(config)
    reports = sum(is_report_step(step, steps, every) for step in range(1, steps + 1))
    return (len(SETUP_PHASES) if set_up_events else 0) + config.epochs * (reports + 1)


def precision_text(config: TrainConfig, device) -> str:
    """The arithmetic a run's steps use on ``device``: mixed precision (bf16 / fp16) on CUDA with ``train.amp``,
    else float32."""
    from phenossl.train.schedule import autocast_dtype

    dtype = autocast_dtype(device) if config.amp else None
    return "float32" if dtype is None else f"mixed precision {str(dtype).removeprefix('torch.')}"


def probe_indices(n_cells: int, n: int = PROBE_CELLS) -> np.ndarray:
    """Evenly spaced cells used to watch the representation (same cells every epoch)."""
    return np.unique(np.linspace(0, n_cells - 1, min(n, n_cells)).astype(np.int64))


@dataclass
class _Training:
    """What the set-up gives the loop, and where it stands (for messages that say what was kept)."""

    model: Any
    update: Any
    batches: TileBatches
    device: Any
    probe: Any
    checkpoint_path: Path
    report_every: int
    total_steps: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_saved_epoch: int = -1

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def where(self) -> str:
        if self.last_saved_epoch >= 0:
            return f"The last good checkpoint (epoch {self.last_saved_epoch + 1}) is kept at {self.checkpoint_path}."
        return "No checkpoint had been saved yet."


def iter_training(
    store: TileStore,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    resume: bool = False,
    cancel: threading.Event | None = None,
    run_info: dict[str, Any] | None = None,
    set_up_events: bool = False,
) -> Generator[SetUp | StepProgress | EpochDone, None, TrainResult]:
    """Train on ``store`` according to ``config``, checkpointing into ``run_dir``.

    Yields a :class:`StepProgress` every reported step and an :class:`EpochDone` after every epoch; with
    ``set_up_events`` also a :class:`SetUp` before each phase of the set-up (:data:`SETUP_PHASES`: what the
    first seconds are spent on). ``cancel`` is checked before every step; setting it raises :class:`Cancelled`
    within one step and keeps the last checkpoint. ``run_info`` (e.g. the full run configuration) is stored in
    the checkpoint.
    """
    if set_up_events:
        yield SetUp("device", f"loading PyTorch and choosing the device (train.device: {config.device})")
    import torch

    from phenossl.train import distributed

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.start(resolve_device(config.device))  # under torchrun: join the job, cuda:LOCAL_RANK
    config = resolve_for_store(config, store)
    warn_if_upsampled(config, store)
    torch.manual_seed(seed)
    run: _Training | None = None
    history: list[dict[str, Any]] = []
    try:  # the set-up can run out of device memory too (model, device-resident tiles, probe)
        set_up = iter_set_up(store, config, run_dir, device, seed=seed, resume=resume)
        run = (yield from set_up) if set_up_events else _run_to_end(set_up)
        for epoch in range(run.start_epoch, config.epochs):
            if set_up_events and epoch == run.start_epoch:
                yield SetUp("first-step", f"first batch of epoch {epoch + 1} (the slowest step: the augmentations "
                                          "and the device's kernels warm up)")
            epoch_losses = yield from _train_epoch(run, config, epoch, seed, cancel)
            yield _end_epoch(run, config, epoch, epoch_losses,
                             checkpoint_payload(run.model, config, store, seed, run_info))
            if distributed.is_main_process():
                _write_history(run_dir / HISTORY_FILE, run.history)
        history = run.history
        distributed.barrier()  # every rank returns once rank 0's last checkpoint is written
    except Exception as exc:
        if is_out_of_memory(exc):
            batch_size = run.batches.batch_size if run is not None else config.batch_size
            raise DeviceOutOfMemoryError(
                f"The {device.type.upper()} ran out of memory with batch size {batch_size} at "
                f"{config.resolution} px ({config.encoder}, {len(config.compositions())} composition(s)). "
                f"{run.where() if run is not None else 'No checkpoint had been saved yet.'} "
                f"Try batch size {max(2, batch_size // 2)} or a lower training resolution."
            ) from exc
        raise
    finally:
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()

    return TrainResult(
        checkpoint=run_dir / CHECKPOINT_FILE,
        epochs_completed=config.epochs,
        device=str(device),
        history=pd.DataFrame(history),
    )


def set_up_training(store: TileStore, config: TrainConfig, run_dir: Path, device, *, seed: int = 0,
                    resume: bool = False) -> _Training:
    """:func:`iter_set_up` run to the end, its messages dropped."""
    return _run_to_end(iter_set_up(store, config, run_dir, device, seed=seed, resume=resume))


def _run_to_end(events: Generator[Any, None, Any]) -> Any:
    """What the generator ``events`` returns, its yields dropped."""
    while True:
        try:
            next(events)
        except StopIteration as done:
            return done.value


def iter_set_up(store: TileStore, config: TrainConfig, run_dir: Path, device, *, seed: int = 0,
                resume: bool = False) -> Generator[SetUp, None, _Training]:
    """The model (its encoder started from ``train.encoder_weights`` and, unless resuming, ``train.init_from``),
    the batches, the update step, the state of a resumed run, and the probe cells watched for collapse; a
    :class:`SetUp` is yielded before each of the model, the batches and the probe."""
    import torch

    from phenossl.augment.pipeline import eval_view
    from phenossl.train import distributed
    from phenossl.train.steps import make_step

    checkpoint_path = run_dir / CHECKPOINT_FILE
    labels = training_labels(store.cells, config)  # a bad label column fails here, before anything is built
    start_from = config.init_from if config.init_from is not None and not resume else None
    yield SetUp("model", f"building the model: {config.method} / {config.encoder} on {_device_text(device)} "
                         f"({precision_text(config, device)})")
    model, augmenters = build_model(
        config, in_channels=len(store.channel_names), num_samples=store.n_cells, tile_size=store.tile_size,
        encoder_weights=config.encoder_weights,
        encoder_state=encoder_state_of(start_from) if start_from is not None else None,
        state_source=str(start_from))
    n_train = store.n_cells if labels is None else int(np.isfinite(labels).sum())
    cached = config.cache_on_device != "never" and device.type != "cpu"
    yield SetUp("batches", f"starting the batches: {n_train} cells, {min(config.batch_size, n_train)} a batch"
                           f"{', tiles copied to the ' + device.type.upper() + ' if they fit' if cached else ''}")
    batches = TileBatches(store.tiles, config.batch_size, device, seed=seed, cache_on_device=config.cache_on_device,
                          targets=labels, rank=distributed.rank(), world_size=distributed.world_size())
    total_steps = config.epochs * batches.steps_per_epoch
    model.to(device)
    model = distributed.synchronise_batch_norm(model, device)  # BatchNorm over the global batch under torchrun
    if device.type == "cuda" and config.channels_last:
        model.to(memory_format=torch.channels_last)
    warmup = round(config.warmup_epochs * batches.steps_per_epoch)
    update = make_step(model, augmenters, config, device, total_steps, warmup)
    restoring = resume and checkpoint_path.exists()
    yield SetUp("probe", f"{'restoring the checkpoint, ' if restoring else ''}preparing "
                         f"{len(probe_indices(store.n_cells))} probe cells (watched for collapse)")
    probe_tiles = torch.from_numpy(np.array(store.tiles[probe_indices(store.n_cells)]))
    probe = eval_view(config.main_composition(), config.resolution)(probe_tiles.to(device).float())
    run = _Training(model, update, batches, device, probe, checkpoint_path, report_every(config, device.type),
                    total_steps)
    if restoring:
        state = load_checkpoint(checkpoint_path, map_location=str(device))
        _restore(state, checkpoint_path, model, update)
        run.start_epoch, run.history = int(state["epoch"]) + 1, list(state["history"])
    run.last_saved_epoch = run.start_epoch - 1
    return run


def _device_text(device) -> str:
    """``device`` with its GPU's name where it has one (``cuda:0 (NVIDIA H100)``)."""
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _train_epoch(run: _Training, config: TrainConfig, epoch: int, seed: int,
                 cancel: threading.Event | None) -> Generator[StepProgress, None, list[float]]:
    """One epoch of steps, reporting every ``run.report_every``; returns the reported losses."""
    import torch

    from phenossl.train import distributed

    run.model.train()
    generator = torch.Generator(device=run.device)  # each rank augments its own cells with its own stream
    stream = [seed, epoch] if distributed.world_size() == 1 else [seed, epoch, distributed.rank()]
    generator.manual_seed(int(np.random.default_rng(stream).integers(2**62)))
    losses: list[float] = []
    tick, seen = time.perf_counter(), 0
    for step, (batch, targets) in enumerate(run.batches.batches(epoch), start=1):
        if _cancelled(cancel, step, run.report_every, run.device):
            raise Cancelled(f"Training cancelled at epoch {epoch + 1}, step {step}. {run.where()}")
        global_step = epoch * run.steps_per_epoch + step
        x = batch.float()
        if run.device.type == "cuda" and config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        progress = global_step / run.total_steps
        total, parts = (run.update(x, generator, progress) if targets is None
                        else run.update(x, generator, progress, targets))
        seen += len(x)
        if not is_report_step(step, run.steps_per_epoch, run.report_every):
            continue
        loss = float(total.detach())  # one device sync per report, not per step
        if not is_finite(loss):
            raise DivergedError(
                f"The loss became {loss} at epoch {epoch + 1}, step {step}: training diverged. {run.where()} "
                f"Try a lower learning rate (now {config.lr:g}), a larger batch, or mixed precision off."
            )
        elapsed = time.perf_counter() - tick
        losses.append(loss)
        row = StepProgress(epoch=epoch, epochs=config.epochs, step=step, steps_per_epoch=run.steps_per_epoch,
                           global_step=global_step, total_steps=run.total_steps, loss=loss,
                           branch_losses={k: float(v.detach()) for k, v in parts.items()},
                           images_per_s=seen / elapsed if elapsed > 0 else float("nan"), lr=run.update.lr)
        run.history.append(_history_row(row))
        yield row
        tick, seen = time.perf_counter(), 0
    return losses


def _cancelled(cancel: threading.Event | None, step: int, every: int, device) -> bool:
    """Whether to stop before ``step`` (1-based). Alone: whenever ``cancel`` is set. Under torchrun the ranks
    agree (one all-reduce) before every ``every``-th step only, so they all stop at the same step without a
    device synchronisation per step."""
    from phenossl.train import distributed

    wanted = cancel is not None and cancel.is_set()
    if not distributed.active():
        return wanted
    return (step - 1) % every == 0 and distributed.any_rank(wanted, device)


def _end_epoch(run: _Training, config: TrainConfig, epoch: int, losses: list[float],
               payload: dict[str, Any]) -> EpochDone:
    """Check the representation on the probe cells, then save the checkpoint (atomically)."""
    spread = _probe_spread(run.model, run.probe)
    if not is_finite(spread):
        raise DivergedError(
            f"The embeddings became {spread} at epoch {epoch + 1}: training diverged. {run.where()} "
            f"Try a lower learning rate (now {config.lr:g}), a larger batch, or mixed precision off."
        )
    if spread < config.collapse_threshold:
        raise CollapseError(
            f"The representation collapsed at epoch {epoch + 1}: all cells get nearly the same embedding "
            f"(spread {spread:.2e} < {config.collapse_threshold:g}). {run.where()} Try another method "
            "(MoCo v2 and SimCLR resist collapse), a lower learning rate, or stronger augmentations."
        )
    from phenossl.train import distributed

    try:
        if distributed.is_main_process():  # one writer; the ranks' models are identical
            save_checkpoint(run.checkpoint_path, {**payload, **run.update.state_dict(), "epoch": epoch,
                                                  "history": run.history})
    except DiskFullError as exc:
        raise DiskFullError(
            f"{exc} Epoch {epoch + 1} could not be saved. {run.where()} Free some space, then continue with "
            "--resume ('phenossl train CONFIG --resume' or 'phenossl run CONFIG --resume')."
        ) from exc
    run.last_saved_epoch = epoch
    return EpochDone(epoch, config.epochs, float(np.mean(losses)), spread, run.checkpoint_path)


def checkpoint_payload(model, config: TrainConfig, store: TileStore, seed: int,
                       run_info: dict[str, Any] | None) -> dict[str, Any]:
    """What every checkpoint holds besides the optimiser: enough to rebuild the model and know its data."""
    return {
        "model": model.state_dict(),
        "train_config": config.model_dump(mode="json"),
        "in_channels": len(store.channel_names),
        "num_samples": store.n_cells,
        "tile_size": store.tile_size,
        "channel_names": store.channel_names,
        "seed": seed,
        "run_info": run_info or {},
    }


def save_untrained(store: TileStore, config: TrainConfig, run_dir: str | Path, *, seed: int = 0,
                   run_info: dict[str, Any] | None = None) -> TrainResult:
    """The chosen encoder as initialised with ``seed`` and never trained, saved as the run's checkpoint
    (``representation: random-init``): the baseline a trained encoder has to beat. Embedding, clustering and
    napari read it as they read a trained one; it cannot be resumed (there is nothing to continue)."""
    import torch

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = resolve_for_store(config, store)
    model, _ = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells,
                           tile_size=store.tile_size)
    checkpoint = run_dir / CHECKPOINT_FILE
    save_checkpoint(checkpoint, {**checkpoint_payload(model, config, store, seed, run_info), "epoch": -1,
                                 "history": [], "untrained": True})
    return TrainResult(checkpoint=checkpoint, epochs_completed=0, device="cpu", history=pd.DataFrame())


def train(store: TileStore, config: TrainConfig, run_dir: str | Path, *, progress=None, **kwargs) -> TrainResult:
    """Run :func:`iter_training` to the end, passing each event to ``progress`` (if given; ``set_up_events``
    adds the set-up's)."""
    events = iter_training(store, config, run_dir, **kwargs)
    while True:
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(event)


def _history_row(row: StepProgress) -> dict[str, Any]:
    record = {
        "epoch": row.epoch + 1,
        "step": row.step,
        "global_step": row.global_step,
        "loss": row.loss,
        "images_per_s": row.images_per_s,
        "lr": row.lr,
    }
    record.update({f"loss_{name}": value for name, value in row.branch_losses.items()})
    return record


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))


def _probe_spread(model, probe) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        spread = embedding_spread(model.embed(probe))
    model.train()
    return spread


def _restore(state: dict[str, Any], checkpoint: Path, model, update) -> None:
    """Load the model and the optimisation state for a resume; a clear error when the checkpoint was made
    with another model (the configuration changed since)."""
    try:
        model.load_state_dict(state["model"])
        update.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        saved = state.get("train_config", {})
        was = ", ".join(f"{k}={saved[k]}" for k in ("method", "encoder", "cassle", "weight_a") if k in saved)
        raise InputError(
            f"Cannot resume from {checkpoint}: it was trained with another model ({was or 'unknown settings'}) "
            "that does not fit this configuration. Resume with the configuration it was trained with, or start "
            f"a new run. ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
