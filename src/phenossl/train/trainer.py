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
import math
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
from phenossl.tiles.store import TileStore
from phenossl.train.checkpoint import load_checkpoint, save_checkpoint
from phenossl.train.devices import is_out_of_memory, resolve_device
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


def build_model(config: TrainConfig, in_channels: int, num_samples: int, tile_size: int | None = None):
    """The model for ``config`` and one augmenter per composition in the loss.

    SSL methods: shared encoder plus one branch per composition (``num_samples``, the number of cells,
    bounds MoCo's queue, so it is part of a checkpoint). GAN-DL: the encoder as the discriminator's trunk,
    and a generator of images like the store's ``tile_size`` tiles (see :func:`generated_size`)."""
    from phenossl.augment.pipeline import Augmenter

    augmenters = {name: Augmenter(comp, config.resolution) for name, comp in config.compositions().items()}
    if config.method == "gandl":
        from phenossl.methods.gandl import build_gan_model
        from phenossl.models import build_encoder

        encoder = build_encoder(config.encoder, in_channels, config.stem)
        size = generated_size(config, tile_size)
        return build_gan_model(encoder, config.method_params.gandl, size), augmenters
    from phenossl.methods import build_ssl_model

    condition_dim = None
    if config.cassle:
        condition_dim = max(aug.param_dim for aug in augmenters.values())
    model = build_ssl_model(
        config.method,
        config.encoder,
        in_channels=in_channels,
        branch_names=tuple(augmenters),
        params=config.method_params,
        condition_dim=condition_dim,
        num_samples=num_samples,
        stem=config.stem,
    )
    return model, augmenters


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

    shown = store.tile_size * kept_fraction(main_composition(config).transforms)
    if config.resolution > shown * 1.05:
        logger.warning(
            "train.resolution %d px upsamples the %.0f px the views show (%d px tiles%s): nothing is gained and each "
            "step costs about %.0fx more; train.resolution: %d would do.", config.resolution, shown, store.tile_size,
            "" if shown == store.tile_size else ", centre crop", (config.resolution / shown) ** 2, int(shown))


def generated_size(config: TrainConfig, tile_size: int | None = None) -> int:
    """GAN-DL's image size. Generated images go through the same augmentation as the real tiles, so at the
    tiles' own size they are resampled exactly alike (otherwise the discriminator could tell them apart by
    sharpness alone). Only tiles larger than needed are not matched: a composition keeping a centre crop of
    fraction f shows f of the tile at the training resolution, so resolution / f px suffice (both then
    shrink). Without a tile size, that is the size."""
    from phenossl.augment.specs import kept_fraction

    needed = []
    for composition in config.compositions().values():
        needed.append(math.ceil(config.resolution / kept_fraction(composition.transforms)))
    return max(needed) if tile_size is None else min(tile_size, max(needed))


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


def expected_events(n_cells: int, config: TrainConfig) -> int:
    """How many events :func:`iter_training` yields (reports, plus one per epoch): a progress bar's total."""
    steps = n_cells // min(config.batch_size, n_cells)  # TileBatches' rule: full batches only
    every = report_every(config)
    reports = sum(is_report_step(step, steps, every) for step in range(1, steps + 1))
    return config.epochs * (reports + 1)


def probe_indices(n_cells: int, n: int = PROBE_CELLS) -> np.ndarray:
    """Evenly spaced cells used to watch the representation (same cells every epoch)."""
    return np.unique(np.linspace(0, n_cells - 1, min(n, n_cells)).astype(np.int64))


def main_composition(config: TrainConfig):
    """The composition whose deterministic view (e.g. its centre crop) is used to embed cells."""
    return config.composition_a if config.weight_a >= 0.5 else config.composition_b


def iter_training(
    store: TileStore,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
    resume: bool = False,
    cancel: threading.Event | None = None,
    run_info: dict[str, Any] | None = None,
) -> Generator[StepProgress | EpochDone, None, TrainResult]:
    """Train on ``store`` according to ``config``, checkpointing into ``run_dir``.

    ``cancel`` is checked before every step; setting it raises :class:`Cancelled` within one step and
    keeps the last checkpoint. ``run_info`` (e.g. the full run configuration) is stored in the checkpoint.
    """
    import torch

    from phenossl.augment.pipeline import eval_view
    from phenossl.train.steps import make_step

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    device = resolve_device(config.device)
    config = resolve_for_store(config, store)
    warn_if_upsampled(config, store)
    torch.manual_seed(seed)

    model = update = batches = None
    last_saved_epoch = -1
    batch_size = config.batch_size

    def where() -> str:
        if last_saved_epoch >= 0:
            return f"The last good checkpoint (epoch {last_saved_epoch + 1}) is kept at {checkpoint_path}."
        return "No checkpoint had been saved yet."

    try:  # the set-up can run out of device memory too (model, device-resident tiles, probe)
        model, augmenters = build_model(config, in_channels=len(store.channel_names), num_samples=store.n_cells,
                                        tile_size=store.tile_size)
        if config.encoder_weights is not None:
            from phenossl.models import load_encoder_weights

            load_encoder_weights(model.encoder, config.encoder_weights)
        if config.init_from is not None and not resume:
            _init_encoder_from(model, config.init_from)

        batches = TileBatches(store.tiles, config.batch_size, device, seed=seed,
                              cache_on_device=config.cache_on_device)
        batch_size = batches.batch_size
        steps_per_epoch = batches.steps_per_epoch
        total_steps = config.epochs * steps_per_epoch
        log_every = report_every(config, device.type)

        model.to(device)
        if device.type == "cuda" and config.channels_last:
            model.to(memory_format=torch.channels_last)
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
        update = make_step(model, augmenters, config, device, total_steps, warmup)

        start_epoch, history = 0, []
        if resume and checkpoint_path.exists():
            state = load_checkpoint(checkpoint_path, map_location=str(device))
            _restore(state, checkpoint_path, model, update)
            start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
        last_saved_epoch = start_epoch - 1

        generator = torch.Generator(device=device)
        probe_view = eval_view(main_composition(config), config.resolution)
        probe_tiles = torch.from_numpy(np.array(store.tiles[probe_indices(store.n_cells)]))
        probe = probe_view(probe_tiles.to(device).float())  # the same cells, seen the same way, every epoch

        for epoch in range(start_epoch, config.epochs):
            model.train()
            generator.manual_seed(int(np.random.default_rng([seed, epoch]).integers(2**62)))
            epoch_losses: list[float] = []
            tick, seen = time.perf_counter(), 0
            for step, batch in enumerate(batches.epoch(epoch), start=1):
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"Training cancelled at epoch {epoch + 1}, step {step}. {where()}")
                global_step = epoch * steps_per_epoch + step
                x = batch.float()
                if device.type == "cuda" and config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                total, losses = update(x, generator, global_step / total_steps)
                seen += len(x)

                if is_report_step(step, steps_per_epoch, log_every):
                    loss_value = float(total.detach())  # one device sync per report, not per step
                    if not is_finite(loss_value):
                        raise DivergedError(
                            f"The loss became {loss_value} at epoch {epoch + 1}, step {step}: training diverged. "
                            f"{where()} Try a lower learning rate (now {config.lr:g}), a larger batch, "
                            "or mixed precision off."
                        )
                    elapsed = time.perf_counter() - tick
                    epoch_losses.append(loss_value)
                    row = StepProgress(
                        epoch=epoch,
                        epochs=config.epochs,
                        step=step,
                        steps_per_epoch=steps_per_epoch,
                        global_step=global_step,
                        total_steps=total_steps,
                        loss=loss_value,
                        branch_losses={k: float(v.detach()) for k, v in losses.items()},
                        images_per_s=seen / elapsed if elapsed > 0 else float("nan"),
                        lr=update.lr,
                    )
                    history.append(_history_row(row))
                    yield row
                    tick, seen = time.perf_counter(), 0

            spread = _probe_spread(model, probe)
            if not is_finite(spread):
                raise DivergedError(
                    f"The embeddings became {spread} at epoch {epoch + 1}: training diverged. {where()} "
                    f"Try a lower learning rate (now {config.lr:g}), a larger batch, or mixed precision off."
                )
            if spread < config.collapse_threshold:
                raise CollapseError(
                    f"The representation collapsed at epoch {epoch + 1}: all cells get nearly the same embedding "
                    f"(spread {spread:.2e} < {config.collapse_threshold:g}). {where()} Try another method "
                    "(MoCo v2 and SimCLR resist collapse), a lower learning rate, or stronger augmentations."
                )
            try:
                save_checkpoint(checkpoint_path, {**checkpoint_payload(model, config, store, seed, run_info),
                                                  **update.state_dict(), "epoch": epoch, "history": history})
            except DiskFullError as exc:
                raise DiskFullError(
                    f"{exc} Epoch {epoch + 1} could not be saved. {where()} Free some space, then continue with "
                    "--resume ('phenossl train CONFIG --resume' or 'phenossl run CONFIG --resume')."
                ) from exc
            last_saved_epoch = epoch
            _write_history(run_dir / HISTORY_FILE, history)
            yield EpochDone(epoch, config.epochs, float(np.mean(epoch_losses)), spread, checkpoint_path)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise DeviceOutOfMemoryError(
                f"The {device.type.upper()} ran out of memory with batch size {batch_size} at "
                f"{config.resolution} px ({config.encoder}, {len(config.compositions())} composition(s)). {where()} "
                f"Try batch size {max(2, batch_size // 2)} or a lower training resolution."
            ) from exc
        raise
    finally:
        del model, update, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()

    return TrainResult(
        checkpoint=checkpoint_path,
        epochs_completed=config.epochs,
        device=str(device),
        history=pd.DataFrame(history),
    )


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
    """Run :func:`iter_training` to the end, passing each event to ``progress`` (if given)."""
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


def _init_encoder_from(model, checkpoint: Path) -> None:
    """Start from a previous run's encoder (its heads are rebuilt: compositions may have changed)."""
    state = load_checkpoint(checkpoint)
    prefix = "encoder."
    encoder_state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        model.encoder.load_state_dict(encoder_state)
    except RuntimeError as exc:
        raise InputError(
            f"cannot start from {checkpoint}: its encoder does not match this one "
            f"(another encoder type or channel count?): {exc}"
        ) from exc
