"""flash_attention on the GPU (CUDA): ours against mx.fast.scaled_dot_product_attention.

Decode: qL in {1, 4, 8}, kL in {1024, ..., 32768}, B in {1, 4, 16}, Hq 32,
Hkv 8, D 128; no mask at qL = 1, "causal" (bottom-right) at qL > 1 unless
--decode-mask says otherwise. Prefill: causal, qL = kL = L in {1024, ...,
16384}, B 1, same heads. float16 (--dtypes float16,bfloat16 for both).

Method (as bench_qmm_gpu.py): OPS calls per mx.eval, rotating through input
sets (q, k, v) that together exceed the 60 MB L2 4x (at most ~8 GB of inputs,
at least 2 sets), the rotation carrying on from batch to batch, so K and V come
from HBM; time per call = median over --reps batches of (batch time / OPS),
host overhead included. Both implementations run side by side in one process.
Each case checks both outputs against a float32 reference made of plain mx ops
on the same device (last batch element, strided query rows when qL is large,
fewer heads if the score matrix would be large). Memory ceiling: a device
copy measured in the same run (torch if it sees a GPU, else MLX abs(uint32)).

    python benchmarks/bench_attention_gpu.py [--quick] [--device gpu|cpu] [--out DIR] [--tag T]

Writes attention_h200{tag}.json, attention_h200{tag}_decode.png and
attention_h200{tag}_prefill.png to DIR (default benchmarks/results).
--device cpu only checks the script end to end (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx

import mlx_kernels as mk
from _attn_common import versions
from _common import RESULTS, machine_info, print_table
from bench_qmm_gpu import copy_bandwidth_mlx, copy_bandwidth_torch

HQ, HKV, D = 32, 8, 128
DECODE_QL, DECODE_KL, DECODE_B = [1, 4, 8], [1024, 2048, 4096, 8192, 16384, 32768], [1, 4, 16]
PREFILL_L = [1024, 2048, 4096, 8192, 16384]
QUICK_DECODE = [(1, 1024, 1), (1, 16384, 4), (4, 2048, 1), (8, 8192, 1)]  # (qL, kL, B)
QUICK_PREFILL = [1024, 2048]  # [1024] on cpu (MLX's CPU sdpa takes seconds)
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
GOAL_DECODE_SPEEDUP, GOAL_DECODE_BW, GOAL_BW_MIN_BKL, GOAL_PREFILL = 1.5, 0.70, 65536, 0.7
REF_MAX_SCORES = 1 << 28  # float32 score elements of the reference (1 GiB)
REF_MAX_ROWS = 256        # query rows checked per head (strided) when qL is larger


def make_sets(B, qL, kL, dtype, l2_bytes, max_bytes):
    """Input sets (q, k, v) covering >= 4x the L2, at most max_bytes, at least 2."""
    set_bytes = (B * HQ * qL * D + 2 * B * HKV * kL * D) * dtype.size
    count = max(2, min(math.ceil(4 * l2_bytes / set_bytes), int(max_bytes // set_bytes)))
    sets = []
    for _ in range(count):
        sets.append((mx.random.normal((B, HQ, qL, D), dtype=dtype),
                     mx.random.normal((B, HKV, kL, D), dtype=dtype),
                     mx.random.normal((B, HKV, kL, D), dtype=dtype)))
        mx.eval(sets[-1])
    return sets


def check_slice(B, qL, kL):
    """(batch slice, kv heads, query row indices) that the reference covers."""
    rows = list(range(0, qL, math.ceil(qL / REF_MAX_ROWS)))
    rows[-1:] = sorted({rows[-1], qL - 1})  # always the last row (it sees every key)
    hkv = HKV
    while hkv > 1 and hkv * (HQ // HKV) * len(rows) * kL > REF_MAX_SCORES:
        hkv //= 2
    return slice(B - 1, B), hkv, mx.array(rows)


def reference(q, k, v, scale, causal, rows, qL_full):
    """float32 attention of q rows `rows` (global indices; q holds only those rows)."""
    b, hq, n, d = q.shape
    hkv, kL = k.shape[1], k.shape[2]
    g = hq // hkv
    qf = q.astype(mx.float32).reshape(b, hkv, g * n, d) * scale
    s = (qf @ k.astype(mx.float32).swapaxes(-1, -2)).reshape(b, hkv, g, n, kL)
    if causal:  # bottom-right aligned, as MLX: row i sees keys j <= i + kL - qL
        keep = mx.arange(kL)[None, :] <= rows[:, None] + (kL - qL_full)
        s = mx.where(keep, s, -mx.inf)
    p = mx.softmax(s, axis=-1).reshape(b, hkv, g * n, kL)
    return (p @ v.astype(mx.float32)).reshape(b, hq, n, d)


def time_op(fn, sets, ops, reps):
    """Median seconds per call: batches of `ops` calls per mx.eval over rotating sets."""
    counter = itertools.count()

    def batch():
        mx.eval([fn(*sets[next(counter) % len(sets)]) for _ in range(ops)])
        mx.synchronize()

    batch()  # warm-up (kernel compilation, graph caches)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        batch()
        times.append((time.perf_counter() - t0) / ops)
    return statistics.median(times)


def case_bytes(B, qL, kL, itemsize):
    """Bytes a decode must move at least: k, v, q and out."""
    return (2 * B * HKV * kL * D + 2 * B * HQ * qL * D) * itemsize


def case_flops(kind, B, qL, kL):
    """2 * 2 * B * Hq * qL * kL * D, halved for the causal prefill."""
    return 4 * B * HQ * qL * kL * D // (2 if kind == "prefill" else 1)


def impls_for(scale, mask):
    return {
        "ours": lambda q, k, v: mk.flash_attention(q, k, v, scale=scale, mask=mask),
        "mlx": lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask),
    }


def check_outputs(impls, q, k, v, scale, mask, rec):
    """rel_err_<name> of each implementation against the float32 reference over
    the slice check_slice picks (written into rec with 'check'); exceptions are
    recorded as ref_error / <name>_error. Returns the names that ran."""
    B, qL, kL = q.shape[0], q.shape[2], k.shape[2]
    bs, hkv, rows = check_slice(B, qL, kL)
    hq = hkv * (HQ // HKV)
    rec["check"] = f"batch {B - 1}, {hq}/{HQ} q heads, {rows.size}/{qL} query rows"
    try:
        r = reference(q[bs, :hq][:, :, rows], k[bs, :hkv], v[bs, :hkv], scale, mask == "causal", rows, qL)
        rnorm = mx.linalg.norm(r)
        mx.eval(r, rnorm)
    except Exception as e:  # noqa: BLE001
        r, rec["ref_error"] = None, f"{type(e).__name__}: {e}"
    ran = []
    for name, fn in impls.items():
        try:
            if r is not None:
                o = fn(q, k, v)[bs, :hq][:, :, rows].astype(mx.float32)
                rec[f"rel_err_{name}"] = (mx.linalg.norm(o - r) / mx.maximum(rnorm, 1e-30)).item()
            else:
                mx.eval(fn(q, k, v))
            ran.append(name)
        except Exception as e:  # noqa: BLE001
            rec[f"{name}_error"] = f"{type(e).__name__}: {e}"
    return ran


def run_case(kind, B, qL, kL, dtype, mask, args, l2_bytes):
    """Times and errors of both implementations for one case; errors recorded, not raised."""
    scale = D ** -0.5
    impls = impls_for(scale, mask)
    rec = {"kind": kind, "B": B, "Hq": HQ, "Hkv": HKV, "D": D, "qL": qL, "kL": kL,
           "dtype": str(dtype).split(".")[-1], "mask": mask or "none"}
    sets = make_sets(B, qL, kL, dtype, l2_bytes, args.max_set_gb * 1e9)
    rec["sets"] = len(sets)
    rec["bytes"] = case_bytes(B, qL, kL, dtype.size)
    rec["flops"] = case_flops(kind, B, qL, kL)
    q, k, v = sets[0]
    for name in check_outputs(impls, q, k, v, scale, mask, rec):
        try:
            rec[f"{name}_us"] = time_op(impls[name], sets, args.ops, args.reps) * 1e6
        except Exception as e:  # noqa: BLE001
            rec[f"{name}_error"] = f"{type(e).__name__}: {e}"
    del sets, q, k, v
    mx.clear_cache()
    if "ours_us" in rec and "mlx_us" in rec:
        rec["speedup"] = rec["mlx_us"] / rec["ours_us"]
    for name in impls:
        if f"{name}_us" in rec:
            t = rec[f"{name}_us"] * 1e-6
            rec[f"bw_frac_{name}"] = rec["bytes"] / t / args.bw
            rec[f"tflops_{name}"] = rec["flops"] / t / 1e12
    return rec


def case_list(dtypes, parts, quick=False, cpu=False):
    """(kind, B, qL, kL, dtype name) of the benchmark grid, or of its quick subset."""
    decode = QUICK_DECODE if quick else list(itertools.product(DECODE_QL, DECODE_KL, DECODE_B))
    prefill = (QUICK_PREFILL[:1] if cpu else QUICK_PREFILL) if quick else PREFILL_L
    cases = [("decode", B, qL, kL, d) for d in dtypes for (qL, kL, B) in decode if "decode" in parts]
    cases += [("prefill", 1, L, L, d) for d in dtypes for L in prefill if "prefill" in parts]
    return cases


def case_mask(kind, qL, decode_mask="auto"):
    """The mask argument: causal for prefill; decode: --decode-mask (auto: none
    at qL = 1, causal above)."""
    if kind == "prefill":
        return "causal"
    m = decode_mask if decode_mask != "auto" else ("none" if qL == 1 else "causal")
    return None if m == "none" else m


def fmt(rec, key, spec, scale=1.0):
    return format(rec[key] * scale, spec) if rec.get(key) is not None else "-"


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def summarize(results, dtypes):
    dec = [r for r in results if r["kind"] == "decode"]
    pre = [r for r in results if r["kind"] == "prefill"]
    goals = {}
    if dec:
        rows = []
        for dname in dtypes:
            for qL, B in sorted({(r["qL"], r["B"]) for r in dec if r["dtype"] == dname}):
                rs = [r for r in dec if r["dtype"] == dname and r["qL"] == qL and r["B"] == B]
                sp = [r["speedup"] for r in rs if "speedup" in r]
                bw = [r["bw_frac_ours"] for r in rs if "bw_frac_ours" in r]
                errs = [r[f"rel_err_{n}"] for r in rs for n in ("ours", "mlx") if f"rel_err_{n}" in r]
                fails = sum(1 for r in rs for n in ("ours", "mlx") if f"{n}_error" in r)
                rows.append([dname, qL, B, rs[0]["mask"], f"{geomean(sp):.2f}",
                             f"{min(sp, default=float('nan')):.2f}",
                             f"{min(bw) * 100:.0f}-{max(bw) * 100:.0f}%" if bw else "-",
                             f"{max(errs):.1e}" if errs else "-", fails])
        print("\nDecode (per dtype, qL, B; over kL):")
        print_table(["dtype", "qL", "B", "mask", "geomean MLX/ours", "min MLX/ours",
                     "ours bw% range", "max rel err", "errors"], rows)
        sp = [r["speedup"] for r in dec if "speedup" in r]
        big = [r for r in dec if r["B"] * r["kL"] >= GOAL_BW_MIN_BKL]
        low = [r for r in big if r.get("bw_frac_ours", 0) < GOAL_DECODE_BW]
        goals["decode_geomean_speedup"] = {"value": geomean(sp), "goal": GOAL_DECODE_SPEEDUP,
                                           "met": bool(sp) and geomean(sp) >= GOAL_DECODE_SPEEDUP}
        goals["decode_bw_frac_when_B*kL>=65536"] = {
            "min": min((r.get("bw_frac_ours", 0) for r in big), default=None), "goal": GOAL_DECODE_BW,
            "cases": len(big), "below_goal": len(low), "met": (not low) if big else None}
    if pre:
        rows = [[r["dtype"], r["qL"], fmt(r, "ours_us", ".0f"), fmt(r, "mlx_us", ".0f"),
                 fmt(r, "speedup", ".2f"), fmt(r, "tflops_ours", ".0f"), fmt(r, "tflops_mlx", ".0f"),
                 fmt(r, "rel_err_ours", ".1e"), fmt(r, "rel_err_mlx", ".1e")] for r in pre]
        print("\nPrefill (causal, B 1):")
        print_table(["dtype", "L", "ours us", "MLX us", "MLX/ours", "ours TFLOP/s", "MLX TFLOP/s",
                     "err ours", "err MLX"], rows)
        worst = min((r.get("speedup", 0) for r in pre), default=None)
        goals["prefill_min_speedup"] = {"value": worst, "goal": GOAL_PREFILL,
                                        "met": worst is not None and worst >= GOAL_PREFILL}
    print("\nGoals:")
    for name, g in goals.items():
        print(f"  {name}: {({True: 'MET', False: 'NOT MET'}).get(g['met'], 'n/a (no case)')}  "
              + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in g.items() if k != "met"))
    return goals


def plot(results, dtypes, bw, out_dir, tag):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        print("matplotlib not available: no plots")
        return
    dec = [r for r in results if r["kind"] == "decode"]
    if dec:
        qls, bs = sorted({r["qL"] for r in dec}), sorted({r["B"] for r in dec})
        fig, axes = plt.subplots(len(qls), len(bs), figsize=(4 * len(bs), 3.2 * len(qls)),
                                 squeeze=False, sharex=True, sharey=True)
        for (i, qL), (j, B) in itertools.product(enumerate(qls), enumerate(bs)):
            ax = axes[i][j]
            for dname, style in zip(dtypes, ["-", "--"]):
                rs = sorted((r for r in dec if r["qL"] == qL and r["B"] == B and r["dtype"] == dname),
                            key=lambda r: r["kL"])
                for n, c, m, label in (("ours", "C0", "o", "ours"), ("mlx", "C1", "s", "MLX")):
                    pts = [(r["kL"], r[f"bw_frac_{n}"] * 100) for r in rs if f"bw_frac_{n}" in r]
                    if pts:
                        ax.plot(*zip(*pts), m + style, color=c, label=f"{label} {dname}")
            ax.axhline(GOAL_DECODE_BW * 100, color="k", lw=1, ls=":", label="goal (B*kL>=65536)")
            ax.set_xscale("log", base=2)
            ax.set_title(f"qL={qL}, B={B}", fontsize=9)
            ax.set_xlabel("kL")
            ax.grid(True, alpha=0.3)
        for row in axes:
            row[0].set_ylabel(f"% of copy bw ({bw / 1e12:.2f} TB/s)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"attention decode, Hq {HQ} Hkv {HKV} D {D}: bytes (q, k, v, out) / time")
        fig.tight_layout()
        fig.savefig(out_dir / f"attention_h200{tag}_decode.png", dpi=110)
    pre = [r for r in results if r["kind"] == "prefill"]
    if pre:
        fig, ax = plt.subplots(figsize=(6, 4))
        for dname, style in zip(dtypes, ["-", "--"]):
            rs = sorted((r for r in pre if r["dtype"] == dname), key=lambda r: r["qL"])
            for n, c, m, label in (("ours", "C0", "o", "ours"), ("mlx", "C1", "s", "MLX")):
                pts = [(r["qL"], r[f"tflops_{n}"]) for r in rs if f"tflops_{n}" in r]
                if pts:
                    ax.plot(*zip(*pts), m + style, color=c, label=f"{label} {dname}")
            for r in rs:
                if "speedup" in r:
                    ax.annotate(f"x{r['speedup']:.2f}", (r["qL"], r["tflops_ours"]), fontsize=7,
                                textcoords="offset points", xytext=(0, 6), ha="center")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L = qL = kL")
        ax.set_ylabel("TFLOP/s (causal: 2*2*B*Hq*L*L*D/2)")
        ax.set_title(f"attention prefill, causal, B 1, Hq {HQ} Hkv {HKV} D {D} (labels: MLX/ours)",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"attention_h200{tag}_prefill.png", dpi=110)


def progress(cases):
    """tqdm on a terminal (then the case lines go through tqdm.write), else plain."""
    try:
        from tqdm import tqdm
    except ImportError:
        return cases, print
    bar = tqdm(cases, desc="attention", file=sys.stderr, disable=None)
    return bar, (tqdm.write if not bar.disable else print)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a handful of cases")
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--dtypes", default="float16")
    ap.add_argument("--parts", default="decode,prefill")
    ap.add_argument("--decode-mask", choices=["auto", "none", "causal"], default="auto",
                    help="auto: none at qL = 1, causal at qL > 1")
    ap.add_argument("--reps", type=int, default=None, help="batches timed (default 5; 1 on cpu)")
    ap.add_argument("--ops", type=int, default=None, help="calls per mx.eval (default 16; 2 on cpu)")
    ap.add_argument("--l2-mb", type=float, default=60.0)
    ap.add_argument("--max-set-gb", type=float, default=8.0, help="cap on the input sets of a case")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    args.reps = args.reps or (1 if cpu else 5)
    args.ops = args.ops or (2 if cpu else 16)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.set_default_device(mx.cpu if cpu else mx.gpu)
    dtypes = {d: DTYPES[d] for d in args.dtypes.split(",")}
    parts = args.parts.split(",")

    bw_torch = None if cpu else copy_bandwidth_torch()
    bw_mlx = copy_bandwidth_mlx(nbytes=(256 << 20) if cpu else (2 << 30), reps=3 if cpu else 10)
    args.bw = bw_torch or bw_mlx
    torch_txt = f"{bw_torch / 1e12:.3f} TB/s" if bw_torch else "n/a"
    print(f"copy bandwidth (read + write): torch {torch_txt}, mlx abs(uint32) {bw_mlx / 1e12:.3f} TB/s",
          flush=True)

    cases = case_list(list(dtypes), parts, args.quick, cpu)

    machine, vers = machine_info(args.device), versions()
    try:
        import torch
        vers["torch"] = torch.__version__
        if torch.cuda.is_available():
            machine["gpu_torch"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    payload = {
        "benchmark": "attention_gpu", "machine": machine, "versions": vers,
        "method": (f"{args.ops} calls per mx.eval over rotated input sets (q, k, v), the rotation "
                   f"continuing across batches; sets >= 4x the {args.l2_mb:g} MB L2 where at most "
                   f"{args.max_set_gb:g} GB allow, at least 2; median of {args.reps} batches; time per "
                   "call = batch time / calls, host overhead included. bytes = k + v + q + out; "
                   "bw_frac = bytes / time / copy bandwidth (read + write). Prefill flops = "
                   "2*2*B*Hq*L*L*D/2 (causal). rel_err: ||o - ref|| / ||ref|| against float32 "
                   "plain mx ops on the same device, over the slice named in 'check'."),
        "decode_mask": (f"{args.decode_mask}: " + ("no mask at qL = 1, causal (bottom-right) at qL > 1"
                                                   if args.decode_mask == "auto" else "every decode case")),
        "prefill_mask": "causal",
        "copy_bandwidth_torch_Bps": bw_torch, "copy_bandwidth_mlx_Bps": bw_mlx,
        "copy_bandwidth_used_Bps": args.bw, "l2_bytes": args.l2_mb * 1e6,
        "options": {k: v for k, v in vars(args).items() if k != "bw"},
        "complete": False, "goals": None, "results": [],
    }
    path = out_dir / f"attention_h200{args.tag}.json"
    results = payload["results"]
    bar, say = progress(cases)
    for kind, B, qL, kL, dname in bar:
        mask = case_mask(kind, qL, args.decode_mask)
        r = run_case(kind, B, qL, kL, dtypes[dname], mask, args, args.l2_mb * 1e6)
        results.append(r)
        path.write_text(json.dumps(payload, indent=2) + "\n")  # partial results survive a timeout
        errs = "; ".join(f"{n} FAILED: {r[f'{n}_error'][:120]}" for n in ("ours", "mlx")
                         if f"{n}_error" in r)
        say(f"[{len(results)}/{len(cases)}] {kind} {dname} B={B} qL={qL} kL={kL} mask={r['mask']}: "
            f"ours {fmt(r, 'ours_us', '.1f')} us, mlx {fmt(r, 'mlx_us', '.1f')} us, "
            f"x{fmt(r, 'speedup', '.2f')}, " + (
                f"{fmt(r, 'bw_frac_ours', '.0f', 100)}% of copy bw" if kind == "decode"
                else f"{fmt(r, 'tflops_ours', '.0f')} TFLOP/s")
            + f", err ours {fmt(r, 'rel_err_ours', '.1e')} mlx {fmt(r, 'rel_err_mlx', '.1e')}"
            + (f"  {errs}" if errs else ""))
        sys.stdout.flush()

    payload["goals"], payload["complete"] = summarize(results, dtypes), True
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    plot(results, list(dtypes), args.bw, out_dir, args.tag)


if __name__ == "__main__":
    main()
