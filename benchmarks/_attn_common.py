"""Helpers of the attention benchmarks: machine description and timing."""

import datetime
import os
import platform
import statistics
import sys
import time

import mlx.core as mx

from _common import cpu_model  # one description of the CPU for every benchmark


def machine_info():
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
    }


def versions():
    import mlx_kernels

    try:
        from importlib.metadata import version

        mlx_version = version("mlx")
    except Exception:
        mlx_version = getattr(mx, "__version__", "unknown")
    return {
        "mlx": mlx_version,
        "mlx_kernels": mlx_kernels.__version__,
        "python": sys.version.split()[0],
    }


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def time_ms(fn, min_reps=5, budget_s=1.0, slow_s=2.0):
    """Wall time of mx.eval(fn()) in ms: (best, median, calls timed).

    One warm-up call; if that call alone took more than slow_s, it is the
    measurement (MLX's CPU attention takes tens of seconds at kL = 4096).
    Otherwise repeat until min_reps calls and budget_s seconds are both done.
    The best time is the figure to compare on a shared, noisy machine.
    """
    t0 = time.perf_counter()
    mx.eval(fn())
    first = time.perf_counter() - t0
    if first > slow_s:
        return first * 1e3, first * 1e3, 1
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return min(times) * 1e3, statistics.median(times) * 1e3, len(times)
