"""Segmentation and tiling as Dask tasks: ``phenossl tile CONFIG --scheduler local:N | tcp://HOST:PORT``.

The same two passes as a serial build (:func:`phenossl.tiles.build.build_store_from_fields`), each field one
task of a ``distributed`` cluster, with the same per-field functions (``field_labels``, ``field_nuclei``,
``tile_field``, ``write_fields_store``), so the store is the one a serial run makes: the same cells in the
same order, the same tiles, the same normalisation percentiles.

Every task writes its field's *shard*, a folder of ``<store>.shards/`` (``<field>/segmented/``,
``<field>/sample-*.npy``, ``<field>/tiled-*/``), each part written under a temporary name and renamed into
place when complete: a killed worker leaves no part that looks complete. The client then joins the shards
in field order into one ordinary memory-mapped store and removes them.

1. *Segmentation*: read the field, segment it, keep its labels and nuclei table, and draw its pixel sample
   for the percentiles. A serial build draws the samples from one seeded random stream, field after field,
   so field i's sample depends on the sizes of the fields before it. Each task is given the stream's state
   the serial run would reach if every field had the first field's size (the usual plate); the client then
   checks the sizes found and redraws, from the right state, any sample drawn from a wrong one (a read, no
   segmentation). The percentiles are then computed from the same samples in the same order as serially.
2. *Tiling*: read the field again, normalise it with the run's percentiles, cut its tiles and masks.

A field that fails (an unreadable file, a worker killed too often) is reported by name with its files once
the pass is over; the other fields' shards are kept, and running the same command again does only what is
missing: a shard part is reused when it was made from the same files (path, size, modification time), the
same settings and (tiles) the same percentiles. Tasks are retried (``retries``) after an error, and Dask
reschedules the tasks of a worker that died.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenossl.atomic import check_can_write
from phenossl.config import InputConfig, SegmentConfig, TileConfig
from phenossl.errors import Cancelled, ConfigError, InputError, PhenosslError
from phenossl.io.field_source import FieldSource
from phenossl.io.fields import read_field
from phenossl.tiles import build
from phenossl.tiles.extract import TileCut, tile_cells
from phenossl.tiles.normalize import PercentileSampler, draw_sample, generator_at
from phenossl.tiles.store import TILE_DTYPE, TileStore

logger = logging.getLogger(__name__)

SHARDS_SUFFIX = ".shards"
SEGMENTED_DIR = "segmented"
FIELD_FILE = "field.json"
LABELS_FILE = "labels.npy"
NUCLEI_FILE = "nuclei.pkl"
TILES_FILE = "tiles.npy"
MASKS_FILE = "masks.npy"
ROWS_FILE = "rows.npy"
PADDED_FILE = "padded.npy"

#: times a task is tried again after an error (a worker that dies is Dask's to reschedule, up to its
#: ``distributed.scheduler.allowed-failures``)
RETRIES = 2


class FieldsFailedError(InputError):
    """Some fields could not be segmented or tiled; the others' shards are kept for a rerun."""

    def __init__(self, message: str, failed: list[str]):
        super().__init__(message)
        self.failed = failed


def shards_folder(store_path: str | os.PathLike) -> Path:
    """Where a distributed build keeps its fields' shards until they are joined: ``<store>.shards``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + SHARDS_SUFFIX)


def shard_name(key: str) -> str:
    """A field's shard folder: its key made safe for a file name, and a hash of the key (keys stay distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80] or "field"
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_stamp(path: Path) -> list:
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def segment_fingerprint(source: FieldSource, channel_names: Sequence[str], input_config: InputConfig,
                        segmentation: SegmentConfig) -> str:
    """What a field's segmentation shard was made from: its files and how they are read, and the settings."""
    return _hash({
        "key": source.key, "files": [_file_stamp(Path(p)) for p in source.source_files],
        "plate": source.plate, "well": source.well, "site": source.site, "member": source.member,
        "source_channels": source.channel_names, "channel_map": source.channel_map,
        "channel_axis": source.channel_axis, "channels": list(channel_names),
        "nuclear_channel": input_config.nuclear_channel, "segmentation": segmentation.model_dump(mode="json"),
    })


def sample_file(fingerprint: str, state: dict | None, samples: int) -> str:
    """The name of a field's pixel sample drawn from random ``state`` (None: all its pixels, no draw)."""
    return f"sample-{_hash([fingerprint, state, samples])}.npy"


def tiles_dir(fingerprint: str, lo_hi: np.ndarray, tiles: TileConfig) -> str:
    """The name of a field's tiles cut with percentiles ``lo_hi``."""
    return f"tiled-{_hash([fingerprint, np.asarray(lo_hi, dtype=np.float64).tolist(), tiles.size, tiles.border])}"


def _publish(partial: Path, final: Path) -> None:
    """Move a completed shard part into place (replacing a stale one)."""
    try:
        partial.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(final, ignore_errors=True)  # stale (made from other files or settings), or a duplicate
        partial.rename(final)


@contextlib.contextmanager
def _partial_dir(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final``, renamed into place when the block ends without error."""
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir(parents=True)
    try:
        yield partial
        _publish(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy file under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as out:
        np.save(out, array)
    tmp.replace(path)


@dataclass(frozen=True)
class SegmentJob:
    """Segment one field (unless its segmentation shard is complete) and draw its pixel sample."""

    source: FieldSource
    shard: Path
    fingerprint: str
    channel_names: tuple[str, ...]
    input_config: InputConfig
    segmentation: SegmentConfig
    samples: int
    state: dict | None  # the random state to draw the sample from (when the field has more pixels than samples)
    segment: bool = True


@dataclass(frozen=True)
class TileJob:
    """Cut one field's tiles with the run's percentiles."""

    source: FieldSource
    shard: Path
    channel_names: tuple[str, ...]
    lo_hi: np.ndarray
    tiles: TileConfig
    name: str


def _pixels(image: np.ndarray) -> int:
    return int(np.prod(image.shape[1:]))


def _reported(task):
    """A task that returns the PhenosslError of a bad input (an unreadable file: trying again cannot help) instead
    of raising it; other errors (a file system's hiccup) are raised, for Dask to try the task again."""
    @functools.wraps(task)
    def run(job):
        try:
            return task(job)
        except PhenosslError as exc:
            return exc
    return run


@_reported
def segment_task(job: SegmentJob) -> None:
    """A Dask task: the first pass of one field, into its shard."""
    fld = read_field(job.source)
    build.check_channels(fld, job.channel_names)
    n_pixels = _pixels(fld.image)
    job.shard.mkdir(parents=True, exist_ok=True)
    if job.segment:
        labels, without_nuclei = build.field_labels(fld, None, job.input_config, job.segmentation)
        nuclei = build.field_nuclei(fld, labels, -1)  # its place in the run is set when the shards are joined
        with _partial_dir(job.shard / SEGMENTED_DIR) as partial:
            np.save(partial / LABELS_FILE, labels)
            nuclei.to_pickle(partial / NUCLEI_FILE)
            (partial / FIELD_FILE).write_text(json.dumps({
                "key": job.source.key, "fingerprint": job.fingerprint, "shape": list(fld.image.shape),
                "n_pixels": n_pixels, "without_nuclei": bool(without_nuclei), "n_nuclei": len(nuclei)}))
    state = job.state if n_pixels > job.samples else None
    target = job.shard / sample_file(job.fingerprint, state, job.samples)
    if not target.exists():
        rng = None if state is None else generator_at(state)
        _save_npy(target, draw_sample(fld.image, len(job.channel_names), job.samples, rng))


@_reported
def tile_task(job: TileJob) -> None:
    """A Dask task: the tiles and masks of one field, into its shard."""
    fld = read_field(job.source)
    build.check_channels(fld, job.channel_names)
    segmented = job.shard / SEGMENTED_DIR
    cut = build.tile_field(fld.image, pd.read_pickle(segmented / NUCLEI_FILE), np.load(segmented / LABELS_FILE),
                           job.lo_hi, job.tiles)
    with _partial_dir(job.shard / job.name) as partial:
        np.save(partial / TILES_FILE, cut.tiles.astype(TILE_DTYPE))
        np.save(partial / MASKS_FILE, cut.masks)
        np.save(partial / ROWS_FILE, cut.rows)
        np.save(partial / PADDED_FILE, cut.cells["padded"].to_numpy())


@_reported
def probe_task(source: FieldSource) -> tuple[list[str], int]:
    """A Dask task: a field's channel names and pixels per channel."""
    fld = read_field(source)
    return list(fld.channel_names), _pixels(fld.image)


@contextlib.contextmanager
def dask_client(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``: ``"local:N"`` starts a LocalCluster of N worker processes (one
    thread each) for the block; an address (``tcp://HOST:PORT``) connects to a running cluster; a Client is
    used as it is."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # a dependency of phenossl; only a broken environment lacks it
        raise ConfigError("--scheduler needs the 'distributed' package: pip install distributed") from exc
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not logger.isEnabledFor(logging.INFO):  # Dask's own INFO lines only with phenossl's (--verbose)
        logging.getLogger("distributed").setLevel(logging.WARNING)
    text = str(scheduler).strip()
    match = re.fullmatch(r"local:(\d+)", text)
    if match:
        n_workers = int(match.group(1))
        if n_workers < 1:
            raise ConfigError(f"--scheduler {text}: the number of worker processes must be at least 1")
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
                Client(cl) as client:
            yield client
        return
    if "://" not in text:
        raise ConfigError(f"--scheduler {text!r}: give local:N (N worker processes on this machine) or the address "
                          "of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    try:
        client = Client(text, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"could not reach the Dask scheduler at {text}: {exc}. Is it running, and is its address "
                         "right (the scheduler prints it; a dask-jobqueue cluster has it as cluster.scheduler_address)?"
                         ) from exc
    with client:
        yield client


def describe_scheduler(scheduler: Any) -> str:
    if isinstance(scheduler, str):
        return scheduler
    return f"{type(scheduler).__name__} {getattr(getattr(scheduler, 'scheduler', None), 'address', '')}".strip()


@dataclass
class _Failure:
    source: FieldSource
    error: BaseException

    def describe(self) -> str:
        files = ", ".join(str(p) for p in self.source.source_files)
        return f"{self.source.key} ({files}): {type(self.error).__name__}: {str(self.error).rstrip('.')}"


@dataclass
class _Counts:
    segmented: int = 0
    sampled_again: int = 0
    tiled: int = 0
    reused: int = 0


def _run_tasks(client, function, jobs: Iterable[tuple[Any, FieldSource]], *, stage: str, retries: int,
               progress, total: int, cancel: threading.Event | None) -> list[_Failure]:
    """Run ``function`` on every job as a Dask task (each submitted as soon as the generator ``jobs`` gives it,
    so the first ones run while the client prepares the next); the failures, once every task is over.
    ``total``: the fields of the stage, those with nothing to do (not among ``jobs``) counted as done."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures, sources = [], {}
    failures = []
    try:
        for job, source in jobs:
            future = client.submit(function, job, retries=retries, pure=False,
                                   key=f"phenossl-{stage}-{Path(job.shard).name}-{token}")
            futures.append(future)
            sources[future.key] = source
        done = total - len(futures)
        if progress:
            progress(stage, done, total)
        for future in as_completed(futures):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{stage.capitalize()} cancelled; the shards written so far are kept for a rerun.")
            error = future.result() if future.status == "finished" else _task_error(future)
            if error is not None:
                failures.append(_Failure(sources[future.key], error))
            done += 1
            if progress:
                progress(stage, done, total)
    finally:
        client.cancel(futures)
    return failures


def _task_error(future) -> BaseException:
    """Why a task did not finish (its exception; for a task cancelled elsewhere, the cancellation)."""
    try:
        error = future.exception()
    except (Exception, asyncio.CancelledError, concurrent.futures.CancelledError) as exc:  # noqa: BLE001
        error = exc
    return error if error is not None else RuntimeError(f"the task ended as {future.status}")


def _raise_failures(failures: list[_Failure], n_fields: int, shards: Path, what: str) -> None:
    if not failures:
        return
    listed = "; ".join(f.describe() for f in failures[:10])
    more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
    raise FieldsFailedError(
        f"{len(failures)} of {n_fields} field(s) could not be {what}: {listed}{more}. The other fields' shards are "
        f"kept in {shards}: fix or remove the failed field(s) and run the same command again to do only what is "
        "missing.", [f.source.key for f in failures])


def _probe(client, sources: Sequence[FieldSource], retries: int, shards: Path) -> tuple[list[str], int]:
    """The channel names and pixels per field of the first field that can be read (the run's channels)."""
    errors = []
    for source in sources[:5]:
        future = client.submit(probe_task, source, retries=retries, pure=False)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - any error reading it: try the next field, report it with the others
            result = exc
        if not isinstance(result, BaseException):
            return result
        errors.append(_Failure(source, result))
    _raise_failures(errors, len(sources), shards, "read")
    raise AssertionError("unreachable")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _segmented_info(shard: Path, fingerprint: str) -> dict | None:
    """A field's complete segmentation shard's description, when it was made from the same files and settings."""
    info = _read_json(shard / SEGMENTED_DIR / FIELD_FILE)
    return info if info is not None and info.get("fingerprint") == fingerprint else None


def _true_states(predicted: Sequence[dict], expected: Sequence[int], found: Sequence[int],
                 sampler: PercentileSampler) -> list[dict]:
    """The states of ``predicted`` (for fields of ``expected`` pixels) corrected for the sizes ``found``: only
    the fields after the first one whose draw differs are replayed (``sampler`` replays them)."""
    def draws(n: int) -> int:
        return n if n > sampler.samples_per_image else 0

    states: list[dict] = []
    replaying = False
    for i, (n_expected, n) in enumerate(zip(expected, found)):
        if replaying:
            states.append(sampler.state())
            sampler.skip(n)
            continue
        states.append(predicted[i])
        if draws(n) != draws(n_expected):
            sampler.set_state(predicted[i])
            sampler.skip(n)
            replaying = True
    return states


def build_store_distributed(
    input_config: InputConfig,
    store_path: str | Path,
    *,
    segmentation: SegmentConfig,
    tiles: TileConfig,
    scheduler: Any,
    overwrite: bool = False,
    progress: build.Progress | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    retries: int = RETRIES,
) -> TileStore:
    """Segment and tile the fields the input section names as Dask tasks, one shard per field, then join the
    shards into the store a serial :func:`~phenossl.tiles.build.build_store` makes (module docstring)."""
    sources = build.config_fields(input_config)
    if not sources:
        raise InputError("no fields to read")
    store_path = check_can_write(store_path, overwrite, folder=True)
    fields = [build.FieldInput.from_source(s) for s in sources]
    metadata, replace_columns = None, ()
    if input_config.metadata is not None:  # joined now, as serially: a table that joins nothing fails in seconds
        metadata, replace_columns = build._field_metadata(fields, input_config), ("plate",)
    shards = shards_folder(store_path)
    shards.mkdir(parents=True, exist_ok=True)
    samples = build.SAMPLES_PER_FIELD
    n_fields = len(sources)
    shard_of = [shards / shard_name(s.key) for s in sources]
    counts = _Counts()

    with dask_client(scheduler) as client:
        channel_names, assumed_pixels = _probe(client, sources, retries, shards)
        n_channels = len(channel_names)
        fingerprints = [segment_fingerprint(s, channel_names, input_config, segmentation) for s in sources]
        infos = [_segmented_info(shard, fp) for shard, fp in zip(shard_of, fingerprints)]

        # pass 1: segment what has no shard yet; samples from the states of a run of fields of the size probed
        # (or found in the shards), each state computed as its field is submitted
        expected = [info["n_pixels"] if info else assumed_pixels for info in infos]
        predicted: list[dict] = []

        def segment_jobs() -> Iterator[tuple[SegmentJob, FieldSource]]:
            sampler = PercentileSampler(n_channels, samples, seed)
            for i, source in enumerate(sources):
                predicted.append(sampler.state())
                sampler.skip(expected[i])
                state = predicted[i] if expected[i] > samples else None
                if infos[i] is not None and (shard_of[i] / sample_file(fingerprints[i], state, samples)).exists():
                    counts.reused += 1
                    continue
                counts.segmented += infos[i] is None
                yield (SegmentJob(source, shard_of[i], fingerprints[i], tuple(channel_names), input_config,
                                  segmentation, samples, predicted[i], segment=infos[i] is None), source)

        failures = _run_tasks(client, segment_task, segment_jobs(), stage="segmenting", retries=retries,
                              progress=progress, total=n_fields, cancel=cancel)
        _raise_failures(failures, n_fields, shards, "read and segmented")

        # the samples' true states, from the sizes found: redraw the samples drawn from a wrong one
        infos = [_segmented_info(shard, fp) for shard, fp in zip(shard_of, fingerprints)]
        missing = [s.key for s, info in zip(sources, infos) if info is None]
        if missing:
            raise InputError(f"the segmentation shards of {len(missing)} field(s) are missing after segmenting them "
                             f"(e.g. {missing[0]}); is {shards} on storage every worker writes to?")
        n_pixels = [int(info["n_pixels"]) for info in infos]
        true_states = _true_states(predicted, expected, n_pixels, PercentileSampler(n_channels, samples, seed))
        states = [state if n > samples else None for state, n in zip(true_states, n_pixels)]
        sample_paths = [shard / sample_file(fp, st, samples) for shard, fp, st in zip(shard_of, fingerprints, states)]
        redo = [i for i, path in enumerate(sample_paths) if not path.exists()]
        jobs = [(SegmentJob(sources[i], shard_of[i], fingerprints[i], tuple(channel_names), input_config,
                            segmentation, samples, states[i], segment=False), sources[i]) for i in redo]
        counts.sampled_again = len(jobs)
        failures = _run_tasks(client, segment_task, jobs, stage="sampling", retries=retries, progress=None,
                              total=len(jobs), cancel=cancel)
        _raise_failures(failures, n_fields, shards, "read again for their pixel sample")

        report = build.BuildReport(fields=n_fields)
        sampler = PercentileSampler(n_channels, samples, seed)
        tables = []
        for i, (source, info, shard) in enumerate(zip(sources, infos, shard_of)):
            sampler.add_sample(np.load(sample_paths[i]))
            nuclei = pd.read_pickle(shard / SEGMENTED_DIR / NUCLEI_FILE)
            nuclei["field_index"] = i
            if info["without_nuclei"]:
                report.fields_without_nuclei.append(source.key)
            report.nuclei_found += len(nuclei)
            tables.append(nuclei)
        build.check_nuclei_found(report, sources[0].key, channel_names, input_config, segmentation)
        lo_hi = sampler.percentiles(*tiles.percentiles)

        # pass 2: tile the fields with nuclei whose tiles (with these percentiles) are not in their shard yet
        names = [tiles_dir(fp, lo_hi, tiles) for fp in fingerprints]
        with_nuclei = [i for i, table in enumerate(tables) if len(table)]
        todo = [i for i in with_nuclei if not (shard_of[i] / names[i]).is_dir()]
        jobs = [(TileJob(sources[i], shard_of[i], tuple(channel_names), lo_hi, tiles, names[i]), sources[i])
                for i in todo]
        counts.tiled = len(jobs)
        failures = _run_tasks(client, tile_task, jobs, stage="tiling", retries=retries, progress=progress,
                              total=n_fields, cancel=cancel)
        _raise_failures(failures, n_fields, shards, "tiled")

    def labels_of(i: int) -> np.ndarray:
        return np.load(shard_of[i] / SEGMENTED_DIR / LABELS_FILE)

    def cut_of(i: int, nuclei: pd.DataFrame) -> TileCut:
        folder = shard_of[i] / names[i]
        rows, padded = np.load(folder / ROWS_FILE), np.load(folder / PADDED_FILE)
        return TileCut(tiles=np.load(folder / TILES_FILE, mmap_mode="r"),
                       cells=tile_cells(nuclei.reset_index(drop=True), rows, padded), n_skipped_border=0,
                       masks=np.load(folder / MASKS_FILE, mmap_mode="r"), rows=rows)

    extra = {"tiling": {"scheduler": describe_scheduler(scheduler), "fields_segmented": counts.segmented,
                        "fields_reused": counts.reused, "samples_redrawn": counts.sampled_again,
                        "fields_tiled": counts.tiled}}
    store = build.write_fields_store(
        store_path, [s.key for s in sources], tables, lo_hi, channel_names, report, labels_of=labels_of,
        cut_of=cut_of, input_config=input_config, segmentation=segmentation, tiles=tiles, metadata=metadata,
        replace_columns=replace_columns, overwrite=overwrite, progress=None, cancel=cancel, extra_info=extra)
    shutil.rmtree(shards, ignore_errors=True)
    return store
