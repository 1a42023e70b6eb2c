"""Kernel times of flash_attention on the GPU, ours and MLX's, read by Nsight
Compute (`ncu`), so that MLX's per-op host overhead hides nothing (the host-
timed bench_attention_gpu.py reports ~30 us for small decodes whatever the
kernels take).

Two steps (run_h200.sh stage `attnncu` does both):

    ncu --csv --page raw --print-units base --metrics gpu__time_duration.sum,\
launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_shared_mem,\
launch__occupancy_limit_registers,launch__waves_per_multiprocessor \
        --cache-control all --clock-control none --profile-from-start off \
        python3 ncu_attention_gpu.py run --cases /tmp/cases.json > /tmp/ncu.csv
    python3 ncu_attention_gpu.py parse --cases /tmp/cases.json --csv /tmp/ncu.csv --out DIR

Cases: the grid of bench_attention_gpu.py (decode qL {1, 4, 8} x kL {1k ..
32k} x B {1, 4, 16}, Hq 32, Hkv 8, D 128, no mask at qL = 1, causal above;
prefill causal L {1k .. 16k}, B 1), float16 (--dtypes float16,bfloat16 for
both), --quick for its subset, --parts decode,prefill, --only BxqLxkL,... to
pick cases. `run --dry-run` lists the cases with the launch plan of ours
(splits, grid, wave efficiency) and the kernels parse will expect; it needs no
GPU (--num-sms, default 132).

`run` prepares every case: inputs evaluated; both outputs checked once
against the float32 reference of bench_attention_gpu.py (check_outputs), which
also warms each op up (kernel compilation, cuDNN plans, graph caches); then
each op is evaluated once more. The copy bandwidth is measured first (torch
device copy, else MLX abs(uint32), as bench_attention_gpu.py). Only then it
opens the profiling range (cuProfilerStart), in which it evaluates, case by
case, our op and then MLX's, each followed by a synchronize. ncu flushes the
caches before each kernel (--cache-control all), so K and V come from HBM, and
leaves the clocks alone. --device cpu runs all but the profiling (checks the
script end to end; MLX's CPU sdpa is slow: use --quick).

`parse` assigns the kernels in launch order: a case is our kernels (names
holding `mlx_kernels`, our namespace, or attn_*_kernel) followed by MLX's
(every other name: its sdpa kernels, cuDNN's for prefill, several per op
maybe). Ours must be exactly what the plan recorded by `run` launches: the
main kernel (attn_decode_mma_kernel, attn_prefill_mma_kernel, ...) with the
plan's grid, then attn_merge_kernel or attn_merge_wide_kernel (the plan's
merge_wide) when the plan splits the keys; the NaN
fill of MLX_KERNELS_POISON_OUTPUTS (fill_bytes_kernel) is reported and left
out of the time. MLX's side must have at least one kernel. Anything else
(a case with other kernels, kernels left over or missing) is a misassignment:
parse prints every one, writes the JSON marked incomplete and exits 2.

Writes attention_h200_ncu{tag}.json (and the decode / prefill PNGs when
matplotlib is there) to DIR (default benchmarks/results) and prints the goals
of the issue: decode geomean speed-up >= 1.5, >= 70% of the copy bandwidth
when B * kL >= 64k, prefill >= 0.7x MLX.

`compare --json NEW BASE [BASE2 ...]` (A/B of two runs of one lease): our
time per case, NEW over the bases' geomean; lists the cases whose plan
changed or whose ratio is off 1 by more than --show-beyond (0.04), then the
geomean, min and max per kind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ncu_qmm_gpu import profile_pairs, read_kernel_rows  # noqa: E402

LAUNCH_METRICS = ("launch__grid_size", "launch__registers_per_thread",
                  "launch__occupancy_limit_shared_mem", "launch__occupancy_limit_registers",
                  "launch__waves_per_multiprocessor")
MAIN_KERNELS = {"decode": "attn_decode_kernel", "decode_mma": "attn_decode_mma_kernel",
                "prefill_mma": "attn_prefill_mma_kernel", "prefill_simt": "attn_prefill_simt_kernel",
                "prefill_wgmma": "attn_prefill_wgmma_kernel"}
MERGE_KERNEL = "attn_merge_kernel"
MERGE_WIDE_KERNEL = "attn_merge_wide_kernel"  # where the plan's merge_wide is set
POISON_KERNEL = "fill_bytes_kernel"
_OURS_RE = re.compile(r"(^|[^\w])(attn_\w+_kernel|fill_bytes_kernel)\b")
METHOD = ("Nsight Compute kernel durations (gpu__time_duration.sum), caches flushed before each "
          "kernel (--cache-control all), clocks not locked (--clock-control none); one launch "
          "per case and implementation, after a warm-up outside the profiled range; all kernels "
          "of an op summed (ours: main + merge when the keys are split; MLX: every kernel of "
          "its sdpa). bytes = k + v + q + out; bw_frac = bytes / kernel time / copy bandwidth "
          "(read + write, measured in the same run). Prefill flops = 2*2*B*Hq*L*L*D/2 "
          "(causal). rel_err: ||o - ref|| / ||ref|| against float32 plain mx ops, over the "
          "slice named in 'check', computed once per case outside the profiled range.")


def is_ours(name):
    return "mlx_kernels" in name or bool(_OURS_RE.search(name))


def short(name):
    """The name without its parameter list, at most 70 characters (the end)."""
    name = name.replace("(anonymous namespace)", "<anon>")
    return name.split("(")[0][-70:]


def kernel_is(name, kernel):
    """name (demangled, mangled or bare) is that of `kernel` (a template)."""
    return re.search(rf"(^|[^\w]|\d){kernel}($|[^\w]|I)", name) is not None


# --- run ---------------------------------------------------------------------

def build_cases(args, num_sms, dram_gbs=None):
    """The case records (no arrays): problem, bytes, flops, our plan (for
    num_sms SMs and dram_gbs GB/s of peak DRAM bandwidth; None: the plan
    binding's default)."""
    import mlx_kernels as mk
    from bench_attention_gpu import D, HKV, HQ, case_bytes, case_flops, case_list, case_mask

    only = {tuple(int(x) for x in s.split("x")) for s in args.only.split(",") if s} if args.only else None
    itemsize = {"float16": 2, "bfloat16": 2, "float32": 4}
    cases = []
    for kind, B, qL, kL, dname in case_list(args.dtypes.split(","), args.parts.split(","),
                                             args.quick, args.device == "cpu"):
        if only is not None and (B, qL, kL) not in only:
            continue
        mask = case_mask(kind, qL)
        dram = {} if dram_gbs is None else {"dram_gbs": dram_gbs}
        p = mk._ext.plan_cuda_flash_attention(B, HQ, HKV, qL, kL, D, dname, mask or "none", num_sms,
                                              **dram)
        plan = {k: p.get(k) for k in ("kernel", "grid", "splits", "chunk", "row_tiles", "block_rows",
                                      "merge_grid", "merge_wide", "smem_bytes", "blocks_per_sm",
                                      "wave_blocks_per_sm", "wave_efficiency")}
        merge = MERGE_WIDE_KERNEL if p.get("merge_wide") else MERGE_KERNEL
        expected = [MAIN_KERNELS[p["kernel"]]] + ([merge] if p["merge_grid"] else [])
        cases.append({"kind": kind, "B": B, "Hq": HQ, "Hkv": HKV, "D": D, "qL": qL, "kL": kL,
                      "dtype": dname, "mask": mask or "none",
                      "bytes": case_bytes(B, qL, kL, itemsize[dname]),
                      "flops": case_flops(kind, B, qL, kL), "plan": plan,
                      "expected_ours": expected})
    return cases


def device_sms():
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).multi_processor_count, "torch"
    except Exception:  # noqa: BLE001
        pass
    return 132, "assumed (no torch): the H200's"


def device_dram_gbs():
    """The GPU's peak DRAM bandwidth (GB/s) as our plan reads it, or None
    where this build has no CUDA backend (the plan binding's default)."""
    import mlx_kernels as mk
    try:
        return mk._ext.cuda_peak_dram_gbs()
    except Exception:  # noqa: BLE001
        return None


def print_plans(cases, num_sms):
    from _common import print_table
    rows = []
    for c in cases:
        p = c["plan"]
        eff = p.get("wave_efficiency")
        rows.append([c["kind"], c["dtype"], c["B"], c["qL"], c["kL"], c["mask"], p["kernel"],
                     p["splits"], p["grid"], p.get("blocks_per_sm") or "-",
                     f"{eff:.2f}" if eff else "-", "+".join(c["expected_ours"])])
    print(f"{len(cases)} cases, plan for {num_sms} SMs:")
    print_table(["kind", "dtype", "B", "qL", "kL", "mask", "kernel", "splits", "grid",
                 "blocks/SM", "wave eff", "our kernels"], rows)


def run(args):
    import mlx.core as mx

    from _attn_common import versions
    from _common import machine_info
    from bench_attention_gpu import D, DTYPES, check_outputs, impls_for
    from bench_qmm_gpu import copy_bandwidth_mlx, copy_bandwidth_torch

    cpu = args.device == "cpu"
    if args.num_sms:
        num_sms, sms_from = args.num_sms, "--num-sms"
    elif args.dry_run or cpu:
        num_sms, sms_from = 132, "assumed: the H200's"
    else:
        num_sms, sms_from = device_sms()
    dram_gbs = None if (args.dry_run or cpu) else device_dram_gbs()
    cases = build_cases(args, num_sms, dram_gbs)
    if args.dry_run:
        print_plans(cases, num_sms)
        return
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731  (stdout: ncu's CSV)
    mx.set_default_device(mx.cpu if cpu else mx.gpu)
    bw_torch = None if cpu else copy_bandwidth_torch()
    bw_mlx = copy_bandwidth_mlx(nbytes=(256 << 20) if cpu else (2 << 30), reps=3 if cpu else 10)
    bw = bw_torch or bw_mlx
    say(f"copy bandwidth: torch {bw_torch and bw_torch / 1e12}, mlx {bw_mlx / 1e12:.3f} TB/s; "
        f"{num_sms} SMs ({sms_from}), peak DRAM {dram_gbs} GB/s")

    scale = D ** -0.5
    prepared = []
    for i, c in enumerate(cases):
        dt = DTYPES[c["dtype"]]
        B, qL, kL = c["B"], c["qL"], c["kL"]
        q = mx.random.normal((B, c["Hq"], qL, D), dtype=dt)
        k = mx.random.normal((B, c["Hkv"], kL, D), dtype=dt)
        v = mx.random.normal((B, c["Hkv"], kL, D), dtype=dt)
        mx.eval(q, k, v)
        mask = None if c["mask"] == "none" else c["mask"]
        impls = impls_for(scale, mask)
        ran = check_outputs(impls, q, k, v, scale, mask, c)  # also the first warm-up
        c["profiled"] = len(ran) == len(impls)
        if c["profiled"]:
            try:
                for fn in impls.values():
                    mx.eval(fn(q, k, v))
            except Exception as e:  # noqa: BLE001
                c["profiled"], c["warmup_error"] = False, f"{type(e).__name__}: {e}"
        if c["profiled"]:
            prepared.append(tuple((lambda fn=fn, q=q, k=k, v=v: fn(q, k, v)) for fn in impls.values()))
        mx.synchronize()
        errs = "; ".join(f"{n} FAILED: {c[f'{n}_error'][:160]}" for n in ("ref", "ours", "mlx")
                         if f"{n}_error" in c)
        say(f"[{i + 1}/{len(cases)}] {c['kind']} {c['dtype']} B={B} qL={qL} kL={kL} mask={c['mask']}: "
            f"splits {c['plan']['splits']} grid {c['plan']['grid']}, err ours "
            f"{c.get('rel_err_ours', float('nan')):.1e} mlx {c.get('rel_err_mlx', float('nan')):.1e}"
            + (f"  {errs}" if errs else "") + ("" if c["profiled"] else "  (not profiled)"))
        del q, k, v

    vers = versions()
    machine = machine_info(args.device)
    try:
        import torch
        vers["torch"] = torch.__version__
    except Exception:  # noqa: BLE001
        pass
    Path(args.cases).write_text(json.dumps({
        "copy_bandwidth_torch_Bps": bw_torch, "copy_bandwidth_mlx_Bps": bw_mlx,
        "copy_bandwidth_Bps": bw, "num_sms": num_sms, "num_sms_from": sms_from, "dram_gbs": dram_gbs,
        "machine": machine, "versions": vers,
        "options": {k: v for k, v in vars(args).items() if k != "mode"},
        "cases": cases}, indent=1))
    if cpu:
        say(f"--device cpu: checked {len(prepared)}/{len(cases)} cases, nothing profiled; "
            f"wrote {args.cases}")
        return
    profile_pairs(prepared)
    say(f"profiled {len(prepared)} of {len(cases)} cases")


# --- parse -------------------------------------------------------------------

def assign(cases, kernels):
    """Gives each profiled case its kernels (launch order: ours, then MLX's);
    returns the misassignments found (empty: all as the plans say)."""
    errors = []
    i = 0
    for n, c in enumerate(cases):
        if not c.get("profiled"):
            continue
        tag = f"case {n} ({c['kind']} {c['dtype']} B={c['B']} qL={c['qL']} kL={c['kL']})"
        ours, mlx = [], []
        while i < len(kernels) and is_ours(kernels[i]["name"]):
            ours.append(kernels[i])
            i += 1
        while i < len(kernels) and not is_ours(kernels[i]["name"]):
            mlx.append(kernels[i])
            i += 1
        poison = [k for k in ours if kernel_is(k["name"], POISON_KERNEL)]
        main = [k for k in ours if not kernel_is(k["name"], POISON_KERNEL)]
        want = c["expected_ours"]
        if not ours and not mlx:
            errors.append(f"{tag}: no kernels left")
            continue
        if len(main) != len(want) or not all(kernel_is(k["name"], w) for k, w in zip(main, want)):
            errors.append(f"{tag}: ours launched {[short(k['name']) for k in ours]}, the plan "
                          f"says {want}")
        elif isinstance(main[0].get("launch__grid_size"), float) and \
                int(main[0]["launch__grid_size"]) != c["plan"]["grid"]:
            errors.append(f"{tag}: our main kernel ran {main[0]['launch__grid_size']:.0f} blocks, "
                          f"the plan {c['plan']['grid']} (another SM count?)")
        if not mlx:
            errors.append(f"{tag}: no MLX kernel after ours")
        c["ours_us"] = sum(k["us"] for k in main)
        c["mlx_us"] = sum(k["us"] for k in mlx)
        c["ours_kernel_us"] = [round(k["us"], 3) for k in main]
        c["mlx_kernel_us"] = [round(k["us"], 3) for k in mlx]
        c["ours_kernels"] = [short(k["name"]) for k in main]
        c["mlx_kernels"] = [short(k["name"]) for k in mlx]
        if poison:
            c["ours_poison_us"] = sum(k["us"] for k in poison)
        if main:
            c["ours_launch"] = {m: main[0].get(m) for m in LAUNCH_METRICS
                                if main[0].get(m) is not None}
    if i != len(kernels):
        errors.append(f"{len(kernels) - i} kernels left after the last case, from "
                      f"{short(kernels[i]['name'])}")
    return errors


def parse(args):
    from _common import print_table
    from bench_attention_gpu import fmt, plot, summarize

    meta = json.loads(Path(args.cases).read_text())
    cases, bw = meta["cases"], meta["copy_bandwidth_Bps"]
    kernels = read_kernel_rows(Path(args.csv).read_text(), LAUNCH_METRICS)
    errors = assign(cases, kernels)
    poisoned = sum(1 for c in cases if "ours_poison_us" in c)
    if poisoned:
        print(f"warning: MLX_KERNELS_POISON_OUTPUTS was set: {poisoned} NaN fills of ours left "
              "out of the times", file=sys.stderr)
    for c in cases:
        for n in ("ours", "mlx"):
            if c.get(f"{n}_us"):
                t = c[f"{n}_us"] * 1e-6
                c[f"bw_frac_{n}"] = c["bytes"] / t / bw
                c[f"tflops_{n}"] = c["flops"] / t / 1e12
        if c.get("ours_us") and c.get("mlx_us"):
            c["speedup"] = c["mlx_us"] / c["ours_us"]

    rows = []
    for c in cases:
        p, launch = c["plan"], c.get("ours_launch", {})
        regs = launch.get("launch__registers_per_thread")
        lim = [launch.get(m) for m in ("launch__occupancy_limit_shared_mem",
                                       "launch__occupancy_limit_registers")]
        rows.append([c["kind"], c["dtype"], c["B"], c["qL"], c["kL"], p["splits"], p["grid"],
                     p.get("blocks_per_sm") or "-",
                     "/".join(f"{x:.0f}" if isinstance(x, float) else "-" for x in lim),
                     f"{regs:.0f}" if isinstance(regs, float) else "-",
                     "+".join(f"{u:.1f}" for u in c.get("ours_kernel_us", [])) or "-",
                     fmt(c, "mlx_us", ".1f"), len(c.get("mlx_kernels", [])),
                     fmt(c, "speedup", ".2f"),
                     fmt(c, "bw_frac_ours", ".0f", 100) if c["kind"] == "decode" else fmt(c, "tflops_ours", ".0f"),
                     fmt(c, "bw_frac_mlx", ".0f", 100) if c["kind"] == "decode" else fmt(c, "tflops_mlx", ".0f"),
                     fmt(c, "rel_err_ours", ".1e"), fmt(c, "rel_err_mlx", ".1e")])
    print(f"Kernel times (ncu), copy bandwidth {bw / 1e12:.2f} TB/s; decode: % of it, "
          "prefill: TFLOP/s")
    print_table(["kind", "dtype", "B", "qL", "kL", "splits", "grid", "plan blk/SM",
                 "ncu blk/SM smem/regs", "regs", "ours us (main+merge)", "MLX us", "MLX kernels",
                 "MLX/ours", "ours %bw|TF", "MLX %bw|TF", "err ours", "err MLX"], rows)
    dtypes = list(dict.fromkeys(c["dtype"] for c in cases))
    goals = summarize(cases, dtypes)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "attention_gpu_ncu", "method": METHOD,
        "machine": meta.get("machine"), "versions": meta.get("versions"),
        "num_sms": meta.get("num_sms"),
        "copy_bandwidth_torch_Bps": meta.get("copy_bandwidth_torch_Bps"),
        "copy_bandwidth_mlx_Bps": meta.get("copy_bandwidth_mlx_Bps"),
        "copy_bandwidth_used_Bps": bw, "decode_mask": "no mask at qL = 1, causal (bottom-right) above",
        "prefill_mask": "causal", "options": meta.get("options"),
        "complete": not errors, "assignment_errors": errors, "goals": goals, "results": cases,
    }
    path = out / f"attention_h200_ncu{args.tag}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    if errors:
        print(f"\nMISASSIGNED: {len(errors)} problem(s); the times above are not to be trusted:",
              file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        sys.exit(2)
    if not args.no_plot:
        plot(cases, dtypes, bw, out, f"_ncu{args.tag}")


def compare(args):
    """A/B of our kernel times: --json NEW BASE [BASE2 ...], results JSONs of
    one lease. Per case, NEW's time over the geometric mean of the bases';
    cases whose plan (splits, merge) differs from the first base's, or whose
    ratio is off 1 by more than --show-beyond, are listed; then the geomean,
    min and max per kind. Returns {kind: [ratios]}."""
    def cases_of(path):
        return {(r["kind"], r["dtype"], r["B"], r["qL"], r["kL"]): r
                for r in json.loads(Path(path).read_text())["results"] if r.get("ours_us")}

    def plan_of(r):
        p = r.get("plan") or {}
        return (p.get("splits"), p.get("merge_wide"))

    from bench_attention_gpu import geomean as geo

    if len(args.json) < 2:
        raise SystemExit("compare: --json NEW BASE [BASE2 ...]")
    new, *bases = [cases_of(p) for p in args.json]
    kinds = {}
    for key in sorted(new):
        if not all(key in b for b in bases):
            continue
        ratio = new[key]["ours_us"] / geo([b[key]["ours_us"] for b in bases])
        kinds.setdefault(key[0], []).append(ratio)
        changed = plan_of(new[key]) != plan_of(bases[0][key])
        if args.per_case or changed or abs(ratio - 1) > args.show_beyond:
            splits = f"splits {plan_of(bases[0][key])[0]}->{plan_of(new[key])[0]}"
            print(f"{key[0]:7s} {key[1]:8s} B={key[2]:<3d} qL={key[3]} kL={key[4]:<6d} {splits:14s} "
                  f"ours {geo([b[key]['ours_us'] for b in bases]):7.1f} -> {new[key]['ours_us']:7.1f} us "
                  f"x{ratio:.3f}; MLX/ours {new[key].get('speedup', float('nan')):.2f}")
    for kind, ratios in sorted(kinds.items()):
        print(f"{kind}: {len(ratios)} cases, new/base geomean {geo(ratios):.3f}, "
              f"{min(ratios):.3f}-{max(ratios):.3f}")
    return kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["run", "parse", "compare"])
    ap.add_argument("--cases", default="/tmp/attn_ncu_cases.json",
                    help="the case records run writes and parse reads")
    ap.add_argument("--csv", default="/tmp/attn_ncu.csv", help="ncu's CSV (parse)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--tag", default="", help="suffix of the output file names (parse)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--dtypes", default="float16")
    ap.add_argument("--parts", default="decode,prefill")
    ap.add_argument("--quick", action="store_true", help="the quick subset of bench_attention_gpu.py")
    ap.add_argument("--only", default="", help="cases BxqLxkL, comma-separated (e.g. 16x1x2048)")
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--num-sms", type=int, default=0, help="SMs for the plan (default: the GPU's)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and plans, run nothing")
    ap.add_argument("--json", nargs="+", default=[], help="compare: NEW BASE [BASE2 ...]")
    ap.add_argument("--per-case", action="store_true", help="compare: list every case")
    ap.add_argument("--show-beyond", type=float, default=0.04,
                    help="compare: list cases whose ratio is off 1 by more than this")
    args = ap.parse_args()
    {"run": run, "parse": parse, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
