"""Where the time of the CUDA bulk quantized_matmul kernel goes: Nsight Compute
times of the kernel whole and with parts left out (the math, the staging of x,
the split-K reduction; `kOmit` in csrc/cuda/quantized_matmul.cu), case by case
in one run, so that the differences are the parts' costs on the critical path.
Float16 x, 4-bit weights, group 64: the variants exist for that only.

Two steps (run_h200.sh stage `omit` does both):

    ncu --csv --page raw --metrics gpu__time_duration.sum --cache-control all \
        --clock-control none --profile-from-start off \
        python3 ncu_qmm_omit.py run --cases-json /tmp/omit_cases.json > /tmp/omit.csv
    python3 ncu_qmm_omit.py parse --cases-json /tmp/omit_cases.json --csv /tmp/omit.csv --out DIR

The results of the variants are wrong by construction (that is what leaving the
math out means); `run` checks the whole kernel's output against MLX's before
profiling, and sets the mask back to 0 at the end. `parse` checks that every
launch is the bulk kernel with the mask asked for (a plan that picked another
kernel, or a cached graph that kept the previous variant, fails loudly).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ncu_qmm_gpu import read_kernels, weight_bytes  # noqa: E402

DEFAULT_CASES = ["14336x4096:1,8,16", "4096x14336:1,8,16", "4096x4096:1,16",
                 "128256x4096:1,8,16", "151936x1024:1,16"]
# 0: whole; 1: no math; 2: no x staging; 4: no split-K reduction; 7: none of them.
DEFAULT_MASKS = [0, 1, 2, 4, 7]
PARTS = {1: "math", 2: "x staging", 4: "split-K reduction"}
GS, BITS = 64, 4


def parse_cases(specs):
    """["NxK:M1,M2", ...] -> [(N, K, M), ...]"""
    out = []
    for spec in specs:
        shape, ms = spec.split(":")
        N, K = (int(v) for v in shape.split("x"))
        out.extend((N, K, int(m)) for m in ms.split(","))
    return out


def run(args):
    import mlx.core as mx
    import numpy as np

    import mlx_kernels as mk
    from _common import machine_info

    mx.set_default_device(mx.gpu)
    masks = [int(v) for v in args.masks.split(",")]
    cases, prepared = [], []
    weights = {}
    for N, K, M in parse_cases(args.cases):
        if (N, K) not in weights:
            w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=GS, bits=BITS)
            weights[(N, K)] = (w, s.astype(mx.float16), b.astype(mx.float16))
            mx.eval(*weights[(N, K)])
        w, s, b = weights[(N, K)]
        x = mx.random.normal((M, K)).astype(mx.float16)
        mx.eval(x)
        op = lambda x=x, w=w, s=s, b=b: mk.quantized_matmul(x, w, s, b, group_size=GS, bits=BITS)  # noqa: E731
        ref = mx.quantized_matmul(x, w, s, b, group_size=GS, bits=BITS)
        got = op()
        diff = np.array((got - ref).astype(mx.float32))
        rel = float(np.linalg.norm(diff) / np.linalg.norm(np.array(ref.astype(mx.float32))))
        if rel > 1e-2:
            print(f"WARNING {N}x{K} M={M}: whole kernel vs MLX rel err {rel:.2e}", flush=True)
        # The plan for 132 SMs without the driver's cluster capacities (the op
        # asks for those): for the table only; parse checks what really ran.
        plan = mk._ext.plan_cuda_quantized_matmul(M, N, K, GS, BITS, True, "float16", 132)
        for mask in masks:  # warm-up of every variant outside the range
            mk._ext.set_cuda_quantized_matmul_bulk_omit(mask)
            mx.eval(op())
            mx.synchronize()
        mk._ext.set_cuda_quantized_matmul_bulk_omit(0)
        cases.append({"N": N, "K": K, "M": M, "weight_bytes": weight_bytes(N, K),
                      "rel_err_whole_vs_mlx": rel,
                      "plan": {k: plan[k] for k in ("kernel", "split_k", "warps", "ring",
                                                    "tiles_per_block", "steps_per_split",
                                                    "m_tiles", "grid", "smem_bytes")}})
        prepared.append(op)
    Path(args.cases_json).write_text(json.dumps(
        {"masks": masks, "machine": machine_info("gpu"), "cases": cases}))
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    try:
        for op in prepared:
            for mask in masks:
                mk._ext.set_cuda_quantized_matmul_bulk_omit(mask)
                mx.eval(op())
                mx.synchronize()
    finally:
        mk._ext.set_cuda_quantized_matmul_bulk_omit(0)
        cuda.cuProfilerStop()


def kernel_mask(name):
    """The omit mask of a bulk-kernel launch from its name (demangled or
    mangled), or None for any other kernel."""
    m = re.search(r"tc_qmm_bulk_kernel<([^>]*)>", name)
    if m:
        return int(m.group(1).split(",")[-1].strip())
    m = re.search(r"tc_qmm_bulk_kernelI\w+?Li\d+ELi\d+ELi(\d+)E", name)
    return int(m.group(1)) if m else None


def assign(meta, kernels):
    """Each case's time per mask: the profiled kernels in launch order must be,
    case after case, the bulk kernel with each mask in turn (else ValueError)."""
    masks, cases = meta["masks"], meta["cases"]
    bulk = [(name, us) for name, us in kernels if "tc_qmm_bulk_kernel" in name]
    others = [name for name, _ in kernels if "tc_qmm_bulk_kernel" not in name]
    if others:
        raise ValueError(f"{len(others)} other kernels in the range, e.g. {others[0][:80]!r}: "
                         "a case the plan did not give to the bulk kernel?")
    if len(bulk) != len(cases) * len(masks):
        raise ValueError(f"{len(bulk)} bulk launches for {len(cases)} cases x {len(masks)} masks")
    it = iter(bulk)
    for c in cases:
        c["us"] = {}
        for mask in masks:
            name, us = next(it)
            if kernel_mask(name) != mask:
                raise ValueError(f"{c['N']}x{c['K']} M={c['M']}: mask {mask} ran {name[:90]!r}")
            c["us"][str(mask)] = us
        whole = c["us"].get("0")
        if whole is not None:
            c["part_us"] = {PARTS[m]: whole - c["us"][str(m)] for m in PARTS if str(m) in c["us"]}
    return cases


def parse(args):
    meta = json.loads(Path(args.cases_json).read_text())
    cases = assign(meta, read_kernels(Path(args.csv).read_text()))
    masks = meta["masks"]
    head = ["NxK", "M", "split/warps/ring"] + [
        "whole" if m == 0 else "only stream" if m == 7 else f"no {PARTS.get(m, m)}" for m in masks]
    rows = []
    for c in cases:
        p = c["plan"]
        rows.append([f"{c['N']}x{c['K']}", str(c["M"]), f"{p['split_k']}/{p['warps']}/{p['ring']}"]
                    + [f"{c['us'][str(m)]:.1f}" for m in masks])
    from _common import print_table

    print("ncu us (caches flushed); a part's cost = whole - 'no part'")
    print_table(head, rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "method": ("Nsight Compute gpu__time_duration.sum, --cache-control all, --clock-control "
                   "none; each case launched once per omit mask (0: the whole bulk kernel; 1: "
                   "no math; 2: no x staging; 4: no split-K reduction; 7: none of the three, "
                   "only the weight stream), float16 x, 4-bit, group 64."),
        "masks": masks, "machine": meta.get("machine"), "results": cases,
    }
    (out / "qmm_h200_ncu_omit.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["run", "parse"])
    ap.add_argument("--cases", nargs="*", default=DEFAULT_CASES, help="NxK:M1,M2 ...")
    ap.add_argument("--masks", default=",".join(map(str, DEFAULT_MASKS)))
    ap.add_argument("--cases-json", default="/tmp/qmm_omit_cases.json")
    ap.add_argument("--csv", default="/tmp/qmm_omit.csv")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    run(args) if args.mode == "run" else parse(args)


if __name__ == "__main__":
    main()
