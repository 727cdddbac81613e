"""What every benchmark shares: its command line, the machine it ran on, timing, and its result file.

A benchmark is evidence only if a skeptical reader can tell where each number came from and rerun it.
So every study writes ``benchmarks/results/<study>.json`` holding its settings, the exact command, the
machine (CPU model, cores, torch, GPU or none), the load average before and after (the machine may be
shared: CPU timings are then noisy), the date and the git commit, and ``report.py`` renders
docs/benchmarks.md from those files only.

Scripts in this folder import this module by name: run them as ``python benchmarks/<study>.py`` from the
repository root (the script's folder is then first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_CACHE = Path(os.environ.get("PHENOSSL_BENCH_CACHE", Path.home() / ".cache" / "phenossl-bench"))


def default_data_dir() -> Path:
    """../shared/data beside the checkout, or where PHENOSSL_SHARED_DATA points (as the tests do)."""
    env = os.environ.get("PHENOSSL_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def study_parser(study: str, description: str, *, needs_data: bool = True) -> argparse.ArgumentParser:
    """The options every study has: --smoke, --out, --device, --cache-dir (and --data when it reads data)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks/{study}.py", description=description)
    if needs_data:
        parser.add_argument("--data", type=Path, default=default_data_dir(),
                            help="the shared real-data folder (default: ../shared/data beside the repository)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and 1-2 steps: checks that the study still runs (the test suite uses it); "
                             "its numbers mean nothing and it writes no result unless --out is given")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result JSON (default: benchmarks/results/{study}.json; none with --smoke)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where stores and scratch runs are kept, outside the repository")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice). On a CPU shared with other jobs one "
                             "thread can be faster than two: idle OpenMP threads spin while their partner waits")
    return parser


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU thread count when --threads was given (recorded in the result's machine section)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def result_path(name: str, args: argparse.Namespace) -> Path | None:
    """Where this invocation writes its JSON: --out, else the committed results file (never for --smoke)."""
    if args.out is not None:
        return args.out
    return None if args.smoke else RESULTS_DIR / f"{name}.json"


def require_data(data_dir: Path, *parts: str) -> Path:
    """The data folder ``data_dir/parts``, or exit with a message saying where it was looked for."""
    path = Path(data_dir).joinpath(*parts)
    if not path.exists():
        raise SystemExit(
            f"real data not found: {path} does not exist. The benchmarks read ../shared/data beside the "
            "repository (it is not redistributed with phenossl); pass --data PATH or set PHENOSSL_SHARED_DATA."
        )
    return path


def log(message: str) -> None:
    """A timestamped progress line on stderr (long studies run under nohup with a log file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine --------------------------------------------------------------------------------------


def resolve_device(name: str):
    from phenossl.train.devices import resolve_device as core_resolve

    return core_resolve(name)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info(device) -> dict[str, Any] | None:
    """Name, memory and driver of the CUDA device used, or None when the run did not use one."""
    import torch

    if device is None or device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def git_state() -> dict[str, Any]:
    """The commit the code ran from and whether the working tree had changes (read-only git calls)."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def machine_info(device=None) -> dict[str, Any]:
    """Everything about the machine that can change a number: CPU, cores, memory, library versions, GPU."""
    from importlib.metadata import version

    import numpy
    import psutil
    import torch

    cuda_devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),  # versions from metadata: importing costs seconds
        "numpy": numpy.__version__,
        "scikit_learn": version("scikit-learn"),
        "scikit_image": version("scikit-image"),
        "device": str(device) if device is not None else None,
        "gpu": gpu_info(device),
        "cuda_devices_visible": cuda_devices,
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: above the core count, CPU timings are shared with others."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --- timing -------------------------------------------------------------------------------------------


def synchronize(device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not just its launch."""
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], Any], device=None) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``, synchronising the device before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def mean_sd(values: Sequence[float | None]) -> dict[str, float]:
    """Mean and sample standard deviation (sd is NaN for one value) and n, for 'mean ± sd' tables; missing
    values (None, NaN: e.g. a score a result file holds as null) are left out."""
    values = [float(v) for v in values if v is not None and v == v]
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


# --- the result file ----------------------------------------------------------------------------------


def blob_embeddings(n_cells: int, dims: int, n_groups: int = 30, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian blobs (float32): clustered like real embeddings, so K-Means and UMAP behave as they would."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_groups, dims)).astype(np.float32)
    data = rng.standard_normal((n_cells, dims), dtype=np.float32)
    data += centres[rng.integers(n_groups, size=n_cells)]
    return data


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python", shlex.quote(script_text), *map(shlex.quote, args)])


def explicit_command(command: str, device=None, threads: int | None = None) -> str:
    """``command`` with the device it resolved to and the torch thread count it ran with appended when it
    did not say them: rerun on another machine, ``--device auto`` could pick a GPU (and write the GPU result
    file) and torch could pick another thread count."""
    words = shlex.split(command)
    if device is not None and "--device" not in words:
        command += f" --device {getattr(device, 'type', device)}"
    on_cpu = device is None or getattr(device, "type", device) == "cpu"
    if threads and on_cpu and "--threads" not in words:
        command += f" --threads {threads}"
    return command


class StudyRecord:
    """Collects one study's context at its start and writes the JSON at its end."""

    def __init__(self, study: str, args: argparse.Namespace, device=None, argv: Sequence[str] | None = None,
                 result_name: str | None = None):
        self.study = study
        self.result_name = result_name or study  # e.g. speed_training_gpu: a GPU run does not replace the CPU one
        self.args = args
        self.device = device
        self.started = dt.datetime.now(dt.UTC)
        import torch

        self.command = explicit_command(command_line(argv), device, torch.get_num_threads())
        self.load_start = load_average()
        self.clock = time.perf_counter()

    def finish(self, settings: dict[str, Any], results: dict[str, Any], notes: Sequence[str] = ()) -> dict:
        """The whole record; written to the study's result path (if any) and returned."""
        record = {
            "study": self.study,
            "smoke": bool(self.args.smoke),
            "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": self.command,
            "wall_seconds": round(time.perf_counter() - self.clock, 1),
            "load_average_start": self.load_start,
            "load_average_end": load_average(),
            "machine": machine_info(self.device),
            "git": git_state(),
            "settings": settings,
            "notes": list(notes),
            "results": results,
        }
        path = result_path(self.result_name, self.args)
        if path is not None:
            write_json(path, record)
            log(f"wrote {path}")
        return record


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a result file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=1, default=_plain, allow_nan=False) + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """NaN / inf become null: strict JSON, readable by any tool (a missing sd is not a number)."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """numpy scalars / arrays and paths as plain JSON values."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
