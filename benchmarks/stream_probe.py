"""Ceilings for the CUDA quantized_matmul goals, measured the way the goals are
(Nsight Compute kernel durations, caches flushed): how long ANY kernel takes to
read the bytes of each benchmark weight, what a launch costs (clusters, large
shared memory), and how a tc_qmm_bulk-like TMA ring slows down as its warps
issue more instructions per KB. No MLX needed: `stream_probe.cu` is a plain
CUDA program.

    python3 stream_probe.py all --work /tmp/probe --out DIR    # build, events, ncu, parse
    python3 stream_probe.py parse --work /tmp/probe --out DIR  # again from the raw files
    python3 stream_probe.py plot --out DIR                     # the PNG from DIR's JSON

`all` builds benchmarks/stream_probe.cu for sm_90a, runs it once with CUDA
events (L2 flushed by reading 512 MB before each launch; median of 15) and once
under ncu (one launch a case, the flags of ncu_qmm_gpu.py), then joins both by
launch order; the program and the raw outputs stay in the work folder. Writes
DIR/stream_probe_h200.json and prints, for each benchmark
weight, the fastest pure read, the 70%-of-copy-bandwidth time the issue asks
for, and (from benchmarks/results/qmm_h200_ncu.json, when present) our M = 1
kernel time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ncu_qmm_gpu import SHAPES, read_kernel_rows, weight_bytes  # noqa: E402

COPY_BYTES = 2 << 30  # the copy-bandwidth measurement's size; also a read case
# The synthetic-work sweep runs on a 33 MB weight and on the largest one.
FMA_SHAPES = [(14336, 4096), (128256, 4096)]
KERNEL_OF_KIND = {"empty": "empty_kernel", "ldg_wave": "ldg_read_kernel",
                  "ldg_flat": "ldg_read_kernel", "bulk": "bulk_read_kernel"}
NCU_FLAGS = ["--csv", "--page", "raw", "--print-units", "base", "--metrics",
             "gpu__time_duration.sum", "--cache-control", "all", "--clock-control", "none",
             "--profile-from-start", "off"]
GOAL_FRACTION = 0.70


def probe_sizes():
    """stdin of the probe: "S bytes" for every benchmark weight (float16 scales)
    and the copy size, "F bytes" for the synthetic-work sweep."""
    sizes = sorted({weight_bytes(N, K) for shapes in SHAPES.values() for N, K in shapes})
    lines = [f"S {b}" for b in sizes + [COPY_BYTES]]
    lines += [f"F {weight_bytes(N, K)}" for N, K in FMA_SHAPES]
    return "\n".join(lines) + "\n"


def build(out: Path) -> Path:
    exe = out / "stream_probe"
    cmd = ["nvcc", "-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a",
           f"-I{ROOT / 'csrc'}", str(HERE / "stream_probe.cu"), "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def run_events(exe: Path, out: Path):
    subprocess.run([str(exe), "--events", str(out / "stream_probe_events.json")],
                   input=probe_sizes(), text=True, check=True)


def run_ncu(exe: Path, out: Path, ncu="ncu"):
    with open(out / "stream_probe_ncu.csv", "w") as f:
        subprocess.run([ncu, *NCU_FLAGS, str(exe), "--ncu", str(out / "stream_probe_ncu_cases.json")],
                       input=probe_sizes(), text=True, check=True, stdout=f)


def join(events: dict, ncu_cases: dict, csv_text: str) -> list[dict]:
    """The events run's cases with `ncu_us` added: the ncu kernels in launch
    order, which must be the cases' kernels one for one (else ValueError)."""
    cases = events["cases"]
    if [c["name"] for c in cases] != [c["name"] for c in ncu_cases["cases"]]:
        raise ValueError("the events and ncu runs have different case lists")
    kernels = read_kernel_rows(csv_text)
    if len(kernels) != len(cases):
        raise ValueError(f"{len(kernels)} profiled kernels for {len(cases)} cases")
    for c, k in zip(cases, kernels):
        if KERNEL_OF_KIND[c["kind"]] not in k["name"]:
            raise ValueError(f"case {c['name']!r} got kernel {k['name'][:80]!r}")
        c["ncu_us"] = k["us"]
    return cases


def our_m1_times(path: Path) -> dict:
    """{weight bytes: [(shape, our M = 1 float16 ncu us), ...]} from a
    qmm_h200_ncu.json (two shapes can have the same bytes)."""
    if not path.exists():
        return {}
    ours = {}
    for r in json.loads(path.read_text())["results"]:
        if r["M"] == 1 and r["dtype"] == "float16":
            ours.setdefault(r["weight_bytes"], []).append((f"{r['N']}x{r['K']}", r["ours_us"]))
    return ours


def summarize(cases: list[dict], bw: float, ours: dict) -> list[dict]:
    """For each benchmark weight: the fastest read kernel under ncu, its share
    of the copy bandwidth, the 70% time, and our M = 1 kernel."""
    rows = []
    for b in sorted({c["bytes"] for c in cases if c["kind"] == "ldg_wave"}):
        reads = [c for c in cases if c["kind"] in ("ldg_wave", "ldg_flat", "bulk")
                 and c["fma_per_kb"] == 0 and abs(c["bytes"] - b) < 4608]
        best = min(reads, key=lambda c: c["ncu_us"])
        row = {"bytes": b, "best_read": best["name"], "best_read_us": best["ncu_us"],
               "best_read_bw_frac": b / (best["ncu_us"] * 1e-6) / bw,
               "goal_us": b / (GOAL_FRACTION * bw) * 1e6}
        if b in ours:
            row["ours_m1"] = [{"shape": sh, "us": us} for sh, us in ours[b]]
        rows.append(row)
    return rows


def print_tables(cases, rows, bw):
    print(f"copy bandwidth (events, bytes read + written): {bw / 1e12:.2f} TB/s")
    print(f"{'case':44s} {'MB':>8s} {'events us':>10s} {'ncu us':>9s} {'of copy bw':>10s}")
    for c in cases:
        frac = c["bytes"] / (c["ncu_us"] * 1e-6) / bw if c["bytes"] else 0.0
        print(f"{c['name']:44s} {c['bytes'] / 1e6:8.2f} {c['events_us']:10.2f} {c['ncu_us']:9.2f} "
              f"{frac * 100:9.0f}%")
    print()
    print(f"{'MB':>8s} {'best read us':>13s} {'of copy bw':>10s} {'70% goal us':>12s}  "
          f"{'best read kernel':28s} ours M=1 (float16, --ours)")
    for r in rows:
        ours = ", ".join(f"{o['shape']} {o['us']:.1f} us" for o in r.get("ours_m1", [])) or "-"
        print(f"{r['bytes'] / 1e6:8.2f} {r['best_read_us']:13.2f} {r['best_read_bw_frac'] * 100:9.0f}% "
              f"{r['goal_us']:12.2f}  {r['best_read']:28s} {ours}")


def machine():
    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem",
                            "--format=csv,noheader"], capture_output=True, text=True, check=True)
        info["gpu"] = q.stdout.strip()
        v = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True)
        info["nvcc"] = v.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git"] = None
    return info


def plot(payload: dict, out: Path):
    """stream_probe_h200.png: share of the copy bandwidth against bytes for each
    read kernel (ncu), with the 70% goal and our M = 1 kernels; and the bulk
    ring's time against synthetic FMAs a KB. Nothing without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return
    bw, cases = payload["copy_bandwidth_Bps"], payload["cases"]
    frac = lambda b, us: b / (us * 1e-6) / bw  # noqa: E731
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = {("ldg_wave", 0): "16-byte reads, one wave", ("ldg_flat", 0): "16-byte reads, flat grid",
             ("bulk", 2): "bulk-copy ring 2 (transport only)", ("bulk", 3): "bulk-copy ring 3"}
    for (kind, ring), label in names.items():
        rs = sorted((c for c in cases if c["kind"] == kind and c["fma_per_kb"] == 0
                     and (kind != "bulk" or c["ring"] == ring)), key=lambda c: c["bytes"])
        ax.plot([c["bytes"] / 1e6 for c in rs], [100 * frac(c["bytes"], c["ncu_us"]) for c in rs],
                "o-", label=label)
    ours = [(r["bytes"], o["us"]) for r in payload["summary"] for o in r.get("ours_m1", [])]
    if ours:
        ax.plot([b / 1e6 for b, _ in ours], [100 * frac(b, us) for b, us in ours], "k*", ms=9,
                label="ours, M = 1 (float16, ncu)")
    ax.axhline(70, color="r", ls=":", label="goal: 70% (weights >= 30 MB)")
    ax.set_xscale("log")
    ax.set_xlabel("MB read")
    ax.set_ylabel("% of copy bandwidth (ncu)")
    ax.legend(fontsize=7)
    for b in sorted({c["bytes"] for c in cases if c["fma_per_kb"] > 0}):
        rs = sorted((c for c in cases if c["kind"] == "bulk" and c["ring"] == 2 and c["bytes"] == b),
                    key=lambda c: c["fma_per_kb"])
        base = rs[0]["ncu_us"]
        ax2.plot([c["fma_per_kb"] for c in rs], [c["ncu_us"] / base for c in rs], "o-",
                 label=f"{b / 1e6:.0f} MB ({base:.1f} us without FMAs)")
    ax2.set_xlabel("synthetic FMAs a KB of weights (16 warps an SM)")
    ax2.set_ylabel("time / time without FMAs")
    ax2.legend(fontsize=7)
    fig.suptitle(f"stream_probe on {payload.get('machine', {}).get('gpu', 'GPU')}: copy bandwidth "
                 f"{bw / 1e12:.2f} TB/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "stream_probe_h200.png", dpi=110)
    plt.close(fig)


def parse(work: Path, out: Path, ours_json: Path):
    events = json.loads((work / "stream_probe_events.json").read_text())
    ncu_cases = json.loads((work / "stream_probe_ncu_cases.json").read_text())
    cases = join(events, ncu_cases, (work / "stream_probe_ncu.csv").read_text())
    bw = events["copy_bandwidth_Bps"]
    rows = summarize(cases, bw, our_m1_times(ours_json))
    print_tables(cases, rows, bw)
    payload = {
        "method": ("stream_probe.cu: each case one kernel launch. ncu_us: Nsight Compute "
                   "gpu__time_duration.sum, one launch a case, --cache-control all, "
                   "--clock-control none (the flags of ncu_qmm_gpu.py). events_us: CUDA events "
                   "around the launch, L2 flushed by reading 512 MB before it, median of 15. "
                   "Copy bandwidth: cudaMemcpyAsync device to device of 1 GiB, bytes read + "
                   "written, median of 20."),
        "copy_bandwidth_Bps": bw, "sms": events.get("sms"), "machine": machine(),
        "summary": rows, "cases": cases,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream_probe_h200.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(payload, out)
    return payload


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["all", "parse", "plot", "sizes"])
    ap.add_argument("--work", default="/tmp/stream_probe", help="the program and raw outputs")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/stream_probe"),
                    help="stream_probe_h200.json")
    ap.add_argument("--ours", default=str(HERE / "results" / "qmm_h200_ncu.json"),
                    help="a qmm_h200_ncu.json whose M = 1 times are printed beside the reads")
    ap.add_argument("--ncu", default="ncu")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    if args.mode == "sizes":
        sys.stdout.write(probe_sizes())
        return
    if args.mode == "plot":  # again from a stream_probe_h200.json in --out
        plot(json.loads((out / "stream_probe_h200.json").read_text()), out)
        return
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.mode == "all":
        exe = build(work)
        run_events(exe, work)
        run_ncu(exe, work, args.ncu)
    parse(work, out, Path(args.ours))


if __name__ == "__main__":
    main()
