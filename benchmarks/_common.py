"""Shared helpers for the benchmarks: timing, machine facts, JSON and plots."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    if mx.cuda.is_available() or mx.metal.is_available():
        try:
            info = mx.device_info()
            return str(info.get("device_name") or info.get("architecture"))
        except Exception:  # noqa: BLE001 - best effort description
            return "gpu"
    return None


def machine_info(device: str) -> dict:
    import mlx_kernels

    try:
        import importlib.metadata as md

        mlx_version = md.version("mlx")
    except Exception:  # noqa: BLE001
        mlx_version = getattr(mx, "__version__", "?")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "gpu": gpu_name() if device == "gpu" else None,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "mlx": mlx_version,
        "mlx_kernels": mlx_kernels.__version__,
        "numpy": np.__version__,
        # the checkout's HEAD; on the lent device that is the last landed commit,
        # so an A/B's builds differ in mlx_kernels_dir (/tmp/proj, /tmp/projbase)
        "git": _git_rev(),
        "mlx_kernels_dir": str(Path(mlx_kernels.__file__).resolve().parent),
        # the CUDA quantized_matmul plan's input from the driver (None off CUDA)
        "cuda_bulk_cluster_capacity": cuda_cluster_capacity() if device == "gpu" else None,
        # the plan knobs and switches in effect (read once a process; A/B runs)
        "knobs": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MLX_KERNELS_")},
    }


def cuda_cluster_capacity() -> list[int] | None:
    """Clusters of 1..8 bulk-kernel blocks the GPU runs at once (the plan's
    split rule depends on them; they can be below SMs / split)."""
    from mlx_kernels import _ext

    try:
        return list(_ext.cuda_bulk_cluster_capacity())
    except NotImplementedError:
        return None


def _git_rev() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, cwd=Path(__file__).parent, check=True,
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def time_calls(fn, *, min_time=0.5, min_reps=3, max_reps=200, warmup=1) -> float:
    """Median seconds of one fn() call. fn must evaluate (mx.eval) its result."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_reps and time.perf_counter() - start > min_time:
            break
    return statistics.median(times)


def copy_bandwidth(nbytes=1 << 28, reps=5) -> float:
    """Memory bandwidth of a large NumPy copy, bytes read + written per second."""
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def progress(iterable, total=None, desc=None):
    """A tqdm progress bar when tqdm is installed, the plain iterable otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
