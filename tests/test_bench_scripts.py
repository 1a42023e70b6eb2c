"""The parse step of benchmarks/ncu_attention_gpu.py on a synthetic ncu CSV (no
GPU): kernels assigned to cases in launch order, per-side sums, and a loud
failure (exit 2, JSON marked incomplete) when the kernels do not match the
recorded plans; then the device-call script benchmarks/tools/candidates_ab.sh
driven by a stand-in for run_h200.sh, and run_h200.sh itself offline: its
tune stage with a stand-in ncu, its basebuild stage with a stand-in python3."""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import ncu_attention_gpu as nat  # noqa: E402

METRICS = ["gpu__time_duration.sum"] + list(nat.LAUNCH_METRICS)
COLUMNS = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream",
           "Block Size", "Grid Size", "Device", "CC"] + METRICS
UNITS = {"gpu__time_duration.sum": "nsecond", "launch__grid_size": "", "launch__registers_per_thread":
         "register/thread", "launch__occupancy_limit_shared_mem": "block",
         "launch__occupancy_limit_registers": "block", "launch__waves_per_multiprocessor": ""}
NS = "mlx_kernels::cuda::(anonymous namespace)::"


def ours_name(kernel):
    return f"void {NS}{kernel}<__half, 128, 1>({NS}AttnArgs)"


def fake_csv(kernels):
    """ncu --csv --page raw --print-units base: banner lines, header, units, rows."""
    buf = io.StringIO()
    buf.write("==PROF== Connected to process 4242 (/usr/bin/python3.12)\n")
    buf.write("[4/4] decode float16 ... (the script's own stdout)\n")
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerow([""] * 11 + [UNITS[m] for m in METRICS])
    for i, (name, ns, grid) in enumerate(kernels):
        w.writerow([str(i), "4242", "python3.12", "127.0.0.1", name, "1", "13", "(128, 1, 1)",
                    f"({grid}, 1, 1)", "0", "9.0", f"{ns:,}", str(grid), "140", "3", "3", "0.97"])
    return buf.getvalue()


@pytest.fixture
def cases():
    """Real plans (132 SMs) of three cases: two decodes (split: main + merge)
    and a prefill (main only)."""
    args = argparse.Namespace(dtypes="float16", parts="decode,prefill", quick=False,
                              device="gpu", only="1x1x32768,4x8x1024,1x1024x1024")
    cs = nat.build_cases(args, 132)
    assert [(c["kind"], c["B"], c["qL"], c["kL"]) for c in cs] == [
        ("decode", 1, 1, 32768), ("decode", 4, 8, 1024), ("prefill", 1, 1024, 1024)]
    for c in cs:
        c.update(profiled=True, rel_err_ours=1e-4, rel_err_mlx=2e-4)
    return cs


def launches(cases, poison_case=None):
    """(name, ns, grid) in launch order: per case ours (plan's kernels), then
    MLX's (one kernel for decode, three for prefill)."""
    ks = []
    for n, c in enumerate(cases):
        if n == poison_case:
            ks.append((f"void {NS}fill_bytes_kernel(unsigned char *, long, unsigned char)", 900, 64))
        for j, kernel in enumerate(c["expected_ours"]):
            grid = c["plan"]["grid"] if j == 0 else c["plan"]["merge_grid"]
            ks.append((ours_name(kernel), 10_000 * (n + 1) + 1000 * j, grid))
        if c["kind"] == "decode":
            ks.append(("void mlx::core::cu::kernel_sdpav_2pass_1<__half, true, 128>(...)", 20_000, 512))
        else:
            for j in range(3):
                ks.append((f"cudnn_generated_fort_native_sdpa_sm90_knob_{j}", 5_000 + j, 256))
    return ks


def run_parse(tmp_path, cases, kernels):
    meta = {"copy_bandwidth_Bps": 4.0e12, "copy_bandwidth_torch_Bps": 4.0e12,
            "copy_bandwidth_mlx_Bps": 3.9e12, "num_sms": 132, "machine": {"gpu": "fake"},
            "versions": {}, "options": {}, "cases": cases}
    (tmp_path / "cases.json").write_text(json.dumps(meta))
    (tmp_path / "ncu.csv").write_text(fake_csv(kernels))
    r = subprocess.run([sys.executable, str(BENCH / "ncu_attention_gpu.py"), "parse", "--cases",
                        str(tmp_path / "cases.json"), "--csv", str(tmp_path / "ncu.csv"), "--out",
                        str(tmp_path), "--no-plot"], capture_output=True, text=True, cwd=BENCH)
    out = json.loads((tmp_path / "attention_h200_ncu.json").read_text())
    return r, out


def test_parse_sums_per_case(tmp_path, cases):
    r, out = run_parse(tmp_path, cases, launches(cases, poison_case=1))
    assert r.returncode == 0, r.stderr + r.stdout
    assert out["complete"] and out["assignment_errors"] == []
    dec1, dec4, pre = out["results"]
    # ours: main (+ merge), poison fill left out; MLX: all of its kernels
    assert dec1["ours_kernel_us"] == [10.0, 11.0] and dec1["ours_us"] == pytest.approx(21.0)
    assert dec4["ours_us"] == pytest.approx(20.0 + 21.0)
    assert dec4["ours_poison_us"] == pytest.approx(0.9) and "ours_poison_us" not in dec1
    assert pre["ours_us"] == pytest.approx(30.0) and len(pre["ours_kernels"]) == 1
    assert dec4["mlx_us"] == pytest.approx(20.0)
    assert pre["mlx_us"] == pytest.approx(15.003) and len(pre["mlx_kernels"]) == 3
    assert dec1["speedup"] == pytest.approx(20.0 / 21.0)
    assert dec4["bw_frac_ours"] == pytest.approx(dec4["bytes"] / 41e-6 / 4.0e12)
    assert pre["tflops_ours"] == pytest.approx(pre["flops"] / 30e-6 / 1e12)
    assert dec4["ours_launch"]["launch__registers_per_thread"] == 140
    assert [len(c["ours_kernels"]) for c in out["results"]] == [2, 2, 1]
    assert set(out["goals"]) == {"decode_geomean_speedup", "decode_bw_frac_when_B*kL>=65536",
                                 "prefill_min_speedup"}
    assert "cache-control all" in out["method"]


def test_parse_fails_on_missing_merge(tmp_path, cases):
    ks = launches(cases)
    del ks[1]  # the merge kernel of case 0
    r, out = run_parse(tmp_path, cases, ks)
    assert r.returncode == 2
    assert not out["complete"]
    merge = cases[0]["expected_ours"][1]
    assert any("case 0" in e and merge in e for e in out["assignment_errors"])


def test_parse_fails_on_another_grid(tmp_path, cases):
    ks = launches(cases)
    name, ns, grid = ks[0]
    ks[0] = (name, ns, grid * 2)
    r, out = run_parse(tmp_path, cases, ks)
    assert r.returncode == 2 and "blocks" in out["assignment_errors"][0]


def test_parse_fails_on_missing_mlx_or_extra_kernels(tmp_path, cases):
    ks = [k for k in launches(cases) if "sdpav" not in k[0]]  # MLX's decode kernels gone
    r, out = run_parse(tmp_path, cases, ks)
    assert r.returncode == 2 and len(out["assignment_errors"]) >= 2
    ks = launches(cases) + [("void at::native::copy_kernel(...)", 100, 1)]
    ks.insert(len(ks) - 1, (ours_name("attn_merge_kernel"), 100, 1))
    r, out = run_parse(tmp_path, cases, ks)
    assert r.returncode == 2 and any("left after" in e for e in out["assignment_errors"])


def test_kernel_names():
    assert nat.is_ours(ours_name("attn_decode_mma_kernel"))
    assert nat.is_ours("attn_prefill_mma_kernel")  # --print-kernel-base function
    assert nat.is_ours("_ZN11mlx_kernels4cuda12_GLOBAL__N_122attn_decode_mma_kernelI6__halfLi128ELi1EEEvNS1_8AttnArgsE")
    assert not nat.is_ours("void mlx::core::cu::kernel_sdpav_1pass<__half, true, 128>(...)")
    assert not nat.is_ours("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7")
    assert nat.kernel_is(ours_name("attn_decode_mma_kernel"), "attn_decode_mma_kernel")
    assert not nat.kernel_is(ours_name("attn_decode_mma_kernel"), "attn_decode_kernel")
    assert nat.kernel_is("_ZN11mlx_kernels4cuda12_GLOBAL__N_122attn_decode_mma_kernelI6__halfLi128E",
                         "attn_decode_mma_kernel")


def test_merge_kernel_by_plan(tmp_path, cases):
    """A split decode's plan names its merge kernel: the 8-warp one at B = 1,
    kL 32k (15 splits, 32 rows), the 4-warp one at B = 4, qL 8, kL 1k (4
    splits); parse tells the two apart."""
    dec1, dec4 = cases[0], cases[1]
    assert (dec1["plan"]["splits"], dec4["plan"]["splits"]) == (15, 4)
    assert dec1["plan"]["merge_wide"] and not dec4["plan"]["merge_wide"]
    assert dec1["expected_ours"] == ["attn_decode_mma_kernel", "attn_merge_wide_kernel"]
    assert dec4["expected_ours"] == ["attn_decode_mma_kernel", "attn_merge_kernel"]
    assert not nat.kernel_is(ours_name("attn_merge_wide_kernel"), "attn_merge_kernel")
    assert not nat.kernel_is(ours_name("attn_merge_kernel"), "attn_merge_wide_kernel")
    swapped = [(ours_name("attn_merge_kernel"), ns, g) if "merge_wide" in name else (name, ns, g)
               for name, ns, g in launches(cases)]
    r, out = run_parse(tmp_path, cases, swapped)
    assert r.returncode == 2
    assert any("case 0" in e and "attn_merge_wide_kernel" in e for e in out["assignment_errors"])


def test_compare_ratios(tmp_path, cases):
    """compare: our time per case, NEW over BASE; plan changes listed."""
    def results(scale, splits=None):
        out = []
        for c in cases:
            r = dict(c, ours_us=10.0 * scale if c["kind"] == "decode" else 30.0, speedup=1.0)
            if splits is not None and c["kind"] == "decode":
                r["plan"] = dict(c["plan"], splits=splits)
            out.append(r)
        return {"results": out}
    (tmp_path / "base.json").write_text(json.dumps(results(1.0)))
    (tmp_path / "new.json").write_text(json.dumps(results(0.8, splits=1)))
    r = subprocess.run([sys.executable, str(BENCH / "ncu_attention_gpu.py"), "compare", "--json",
                        str(tmp_path / "new.json"), str(tmp_path / "base.json")],
                       capture_output=True, text=True, cwd=BENCH)
    assert r.returncode == 0, r.stderr
    assert "decode: 2 cases, new/base geomean 0.800, 0.800-0.800" in r.stdout
    assert "prefill: 1 cases, new/base geomean 1.000" in r.stdout
    assert "splits 15->1 " in r.stdout and "splits 4->1 " in r.stdout and "x0.800" in r.stdout
    assert "prefill " not in r.stdout  # unchanged plan, ratio 1: not listed


# A stand-in for benchmarks/run_h200.sh (no GPU, no ncu): each stage writes
# the files the real one writes, with our times scaled by two made-up
# candidates' switches in its environment, so that the A/B script's plumbing (which
# setting reached which run, which runs are compared) shows in the ratios.
STUB_RUNNER = r'''
import json, os, sys
from pathlib import Path
out = Path(os.environ["OUT"]); out.mkdir(parents=True, exist_ok=True)
stage = os.environ["STAGES"]
def attn_factor(env):
    f = 1.0
    if env.get("STUB_ATTN_FAST") == "1": f *= 0.9
    if env.get("STUB_ATTN_SLOW") == "1": f *= 1.1
    return f
if stage == "build":
    print("build rc=0 in 1 s")
elif stage == "attnncu":
    f = attn_factor(os.environ)
    res = [dict(kind="decode", dtype="float16", B=B, qL=1, kL=kL, ours_us=10.0 * f * B, speedup=2.0,
                plan=dict(splits=4, merge_wide=False))
           for B in (1, 4) for kL in (1024, 4096)]
    (out / "attention_h200_ncu.json").write_text(json.dumps({"results": res}))
    print(f"attnncu rc=0 in 1 s (WARM_T={os.environ['WARM_T']})")
elif stage == "tune":
    print(f"tune warm-up WARM_T={os.environ['WARM_T']}")
    for i, setting in enumerate(os.environ["TUNE_SETTINGS"].split(";"), 1):
        env = dict(kv.split("=") for kv in setting.split()) if setting != "-" else {}
        f = 0.8 if "MLX_KERNELS_QMM_SIMT_MAX_KB" in env else 1.0
        res = [dict(N=1024, K=K, M=M, dtype="float16", ours_us=5.0 * f * M,
                    plan=dict(kernel="simt_small_m" if f < 1 else "tensor_core_kslice", m_tiles=1))
               for K in (1024, 2048) for M in (1, 2)]
        (out / f"tune_{i}").mkdir(exist_ok=True)
        (out / f"tune_{i}" / "qmm_h200_ncu.json").write_text(json.dumps({"results": res}))
        print(f"== tune {i}: {setting}")
elif stage == "test":
    (out / "tests.log").write_text(f"T={os.environ['TEST_T']} ENV={os.environ.get('TEST_ENV', '')}\n")
    print("tests rc=0 in 1 s")
'''


def run_candidates_ab(tmp_path, **settings):
    """benchmarks/tools/candidates_ab.sh with the stand-in runner, $OUT at
    tmp_path / "out", and only `settings` of its own variables (the caller's
    ATTN_SETTINGS, QMM_SETTINGS, QMM_WARM_T and TEST_FILES dropped); asserts
    it exits 0."""
    stub = tmp_path / "stub_runner.py"
    stub.write_text(STUB_RUNNER)
    env = {k: v for k, v in os.environ.items() if k not in ("ATTN_SETTINGS", "QMM_SETTINGS", "QMM_WARM_T", "TEST_FILES")}
    env.update(OUT=str(tmp_path / "out"), AB_WORK=str(tmp_path / "work"),
               RUNNER=f"{sys.executable} {stub}", PYTHON=sys.executable, COMPARE_PYTHONPATH="",
               **settings)
    r = subprocess.run(["bash", str(BENCH / "tools" / "candidates_ab.sh")], capture_output=True,
                       text=True, cwd=BENCH.parent, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_candidates_ab_script(tmp_path):
    """benchmarks/tools/candidates_ab.sh drives each setting into its own run,
    compares each candidate against the two default runs, and packs every
    result into $OUT/out.tgz."""
    import tarfile
    out = tmp_path / "out"
    r = run_candidates_ab(
        tmp_path, TEST_FILES="test_a.py", TEST_ENV="STUB_ATTN_FAST=1", DEADLINE="500",
        ATTN_SETTINGS="-;STUB_ATTN_FAST=1;STUB_ATTN_SLOW=1;STUB_ATTN_FAST=1 STUB_ATTN_SLOW=1;-",
        QMM_SETTINGS="-;MLX_KERNELS_QMM_SIMT_MAX_KB=1536;-", QMM_WARM_T="150")
    log = r.stdout
    # the attention runs skip run_h200.sh's warm-up; the tune gets QMM_WARM_T
    assert log.count("attnncu rc=0 in 1 s (WARM_T=0)") == 5, log
    assert log.count("tune warm-up WARM_T=150") == 1, log
    def after(header):
        assert header in log, log
        return log.split(header, 1)[1].split("==", 1)[0]
    fused = "STUB_ATTN_FAST=1"
    stages = "STUB_ATTN_SLOW=1"
    assert "decode: 4 cases, new/base geomean 0.900, 0.900-0.900" in after(
        f"== attention compare: {fused} against defaults (runs 1, 5)")
    assert "decode: 4 cases, new/base geomean 1.100, 1.100-1.100" in after(
        f"== attention compare: {stages} against defaults (runs 1, 5)")
    assert "decode: 4 cases, new/base geomean 0.990, 0.990-0.990" in after(
        f"== attention compare: {fused} {stages} against defaults (runs 1, 5)")
    assert "decode: 4 cases, new/base geomean 1.000, 1.000-1.000" in after(
        "== attention compare: defaults, run 5 against run 1 (noise)")
    qmm = after("== qmm compare: MLX_KERNELS_QMM_SIMT_MAX_KB=1536 against defaults (tune 1, 3)")
    assert "simt_small_m       m_tiles 1:   4 cases, new/base geomean 0.800" in qmm, qmm
    assert "base 2 / base 1: geomean 1.000" in qmm
    with tarfile.open(out / "out.tgz") as tar:
        names = set(tar.getnames())
        tests_log = tar.extractfile("./t/tests.log").read().decode()
    assert sorted(p for p in os.listdir(out)) == ["out.tgz"]
    for i in range(1, 6):
        assert f"./attn_{i}/attention_h200_ncu.json" in names and f"./attn_{i}/setting.txt" in names
    for i in range(1, 4):
        assert f"./q/tune_{i}/qmm_h200_ncu.json" in names
    assert "./ab.log" in names
    t = int(tests_log.split()[0].removeprefix("T="))
    assert 400 < t <= 500 and f"ENV={fused}" in tests_log


def test_candidates_ab_script_without_settings(tmp_path):
    """Without ATTN_SETTINGS and QMM_SETTINGS the script builds and compares
    nothing (no run, no comparison), and still leaves out.tgz."""
    import tarfile
    out = tmp_path / "out"
    r = run_candidates_ab(tmp_path)
    assert "build rc=0" in r.stdout and "== attention" not in r.stdout and "== qmm" not in r.stdout
    with tarfile.open(out / "out.tgz") as tar:
        names = set(tar.getnames())
    assert "./ab.log" in names and not any(n.startswith(("./attn_", "./q/")) for n in names)


# benchmarks/tools/bulk_candidates_call.sh: one device call for the bulk
# kernel's candidates, driving run_h200.sh and candidates_ab.sh (stand-ins that
# log what they were given).
CALL_LOGGER = """import os, sys
keys = ("STAGES", "OUT", "BASE_TREE", "PACK", "QMM_SETTINGS", "QMM_ARGS", "TEST_ENV", "TEST_K",
        "TEST_FILES", "DEADLINE", "TEST_T", "MLX_KERNELS_QMM_BULK_PRODUCER",
        "MLX_KERNELS_QMM_BULK_PUSH")
with open(os.environ["CALL_LOG"], "a") as f:
    f.write(sys.argv[1] + " " + repr({k: os.environ[k] for k in keys if k in os.environ}) + "\\n")
print(sys.argv[1], "ran")
"""


def run_bulk_call(tmp_path, deadline):
    logger = tmp_path / "logger.py"
    logger.write_text(CALL_LOGGER)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLX_KERNELS_") and k not in ("TEST_ENV", "QMM_SETTINGS")}
    env.update(OUT=str(tmp_path / "out"), CALL_LOG=str(log), DEADLINE=str(deadline),
               RUNNER=f"{sys.executable} {logger} runner", AB=f"{sys.executable} {logger} ab")
    r = subprocess.run(["bash", str(BENCH / "tools" / "bulk_candidates_call.sh")],
                       capture_output=True, text=True, cwd=BENCH.parent, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = [line.split(" ", 1) for line in log.read_text().splitlines()]
    return r.stdout, [(who, eval(kv)) for who, kv in calls]


def test_bulk_candidates_call(tmp_path):
    """The builds (main as the base) with the defaults' trace, a trace with
    each candidate, the A/B of main, this tree's defaults, the producer, the
    push and main again with the producer's parity, then the push's parity in
    the time left."""
    out, calls = run_bulk_call(tmp_path, 560)
    assert [who for who, _ in calls] == ["runner", "runner", "runner", "ab", "runner"], out
    build, t_prod, t_push, ab, push_tests = (env for _, env in calls)
    assert build["STAGES"] == "basebuild build trace" and build["BASE_TREE"] == ".basetree"
    assert t_prod["STAGES"] == t_push["STAGES"] == "trace"
    assert t_prod.get("MLX_KERNELS_QMM_BULK_PRODUCER") == "1"
    assert "MLX_KERNELS_QMM_BULK_PUSH" not in t_prod
    assert t_push.get("MLX_KERNELS_QMM_BULK_PUSH") == "1"
    assert "MLX_KERNELS_QMM_BULK_PRODUCER" not in t_push
    assert len({build["OUT"], t_prod["OUT"], t_push["OUT"]}) == 3
    base = "PROJ_PYTHONPATH=/tmp/projbase:/tmp/site"
    assert ab["QMM_SETTINGS"] == (f"{base};-;MLX_KERNELS_QMM_BULK_PRODUCER=1;"
                                  f"MLX_KERNELS_QMM_BULK_PUSH=1;{base}")
    assert ab["TEST_ENV"] == "MLX_KERNELS_QMM_BULK_PRODUCER=1"
    assert 400 <= int(ab["DEADLINE"]) <= 460  # 100 s kept for the push's parity
    assert push_tests["STAGES"] == "test" and push_tests["TEST_ENV"] == "MLX_KERNELS_QMM_BULK_PUSH=1"
    assert 500 <= int(push_tests["TEST_T"]) <= 560 and "push" in push_tests["TEST_K"]


def test_bulk_candidates_call_out_of_time(tmp_path):
    """No time left after the A/B: the push's parity is not started."""
    out, calls = run_bulk_call(tmp_path, 30)
    assert [who for who, _ in calls] == ["runner", "runner", "runner", "ab"], out
    assert "the push's parity" not in out


# benchmarks/tools/ncu_raw_stalls.py: the stall reasons of an ncu raw page.
sys.path.insert(0, str(BENCH / "tools"))
import ncu_raw_stalls as nrs  # noqa: E402


def write_raw(path, kernels):
    """A raw-page CSV as ncu writes it: a message line, the header, the units
    row (empty ID), one row a kernel."""
    names = sorted({k for row in kernels for k in row})
    buf = io.StringIO()
    buf.write("==PROF== Disconnected from process 1\n")
    w = csv.writer(buf, quoting=csv.QUOTE_ALL)
    w.writerow(["ID", "Kernel Name"] + names)
    w.writerow(["", ""] + ["" for _ in names])
    for i, row in enumerate(kernels):
        w.writerow([str(i), row.get("name", "k")] + [row.get(n, "") for n in names])
    path.write_text(buf.getvalue())


def test_raw_stalls_ranks_samples(tmp_path):
    raw = tmp_path / "raw.csv"
    write_raw(raw, [{
        "name": "attn_decode_mma_kernel<__half, 128, 2>",
        "gpu__time_duration.sum": "18,000",
        "launch__grid_size": "128",
        "smsp__pcsamp_warps_issue_stalled_long_scoreboard": "600",
        "smsp__pcsamp_warps_issue_stalled_long_scoreboard_not_issued": "200",
        "smsp__pcsamp_warps_issue_stalled_barrier": "150",
        "smsp__pcsamp_warps_issue_stalled_no_instruction": "50",
        "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio": "9.0",
    }])
    rows = nrs.read_rows(str(raw))
    assert len(rows) == 1
    what, ranked = nrs.stalls(rows[0])
    assert what == "share of warp samples"
    assert [k for k, _ in ranked] == ["long_scoreboard", "barrier", "no_instruction"]
    # the _not_issued twin is a subset of the state's samples: not added
    assert ranked[0][1] == pytest.approx(600 / 800)
    text = nrs.report(rows, top=2)
    assert "time ns 18,000" in text and "grid 128" in text
    assert "long_scoreboard 0.75, barrier 0.19" in text and "no_instruction" not in text


def test_raw_stalls_falls_back_to_per_issue(tmp_path, capsys):
    raw = tmp_path / "raw.csv"
    write_raw(raw, [{"name": "a", "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio": "2.5",
                     "smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio": "4"},
                    {"name": "b", "gpu__time_duration.sum": "5"}])
    assert nrs.main([str(raw)]) == 0
    out = capsys.readouterr().out
    assert "cycles per issued instruction): math_pipe_throttle 4.00, wait 2.50" in out
    assert "== b" in out and "no warp-state metrics" in out
    empty = tmp_path / "empty.csv"
    empty.write_text("==ERROR== no kernels were profiled\n")
    assert nrs.main([str(empty)]) == 1


def run_h200_offline(tmp_path, stub_name, stub_text, dirs=(), **env_vars):
    """benchmarks/run_h200.sh run on this machine in a scratch tree with an
    empty kit (extracted into /tmp/site: nothing), the folders `dirs`, and a
    stand-in `stub_name` (a script) first on PATH; PYTHONPATH and
    PROJ_PYTHONPATH from the caller's environment removed."""
    import tarfile
    tree = tmp_path / "tree"
    (tree / ".kit").mkdir(parents=True)
    for name in dirs:
        (tree / name).mkdir()
    with tarfile.open(tree / ".kit" / "mlx-cuda-kit.tar.xz", "w:xz"):
        pass
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / stub_name
    stub.write_text(stub_text)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_PYTHONPATH", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OUT=str(tmp_path / "out"), **env_vars)
    return subprocess.run(["bash", str(BENCH / "run_h200.sh")], capture_output=True, text=True,
                          cwd=tree, env=env, timeout=120)


def test_run_h200_tune_setting_selects_the_build(tmp_path):
    """benchmarks/run_h200.sh's tune stage times, for each setting, the build that
    the setting's PROJ_PYTHONPATH names (the base build of an A/B), else today's
    (/tmp/proj). Session 24's A/B set it in settings when the script read it only
    at its top, and timed today's build four times. No GPU: a stand-in ncu that
    records the PYTHONPATH it runs under."""
    seen = tmp_path / "ncu_pythonpath.txt"
    r = run_h200_offline(
        tmp_path, "ncu", f'#!/bin/sh\necho "$PYTHONPATH" >> "{seen}"\n', dirs=("benchmarks",),
        STAGES="tune", WARM_T="0", TUNE_T="30",
        TUNE_SETTINGS="PROJ_PYTHONPATH=/tmp/projbase:/tmp/site;-;MLX_KERNELS_QMM_RING=1")
    assert "== tune 3: MLX_KERNELS_QMM_RING=1" in r.stdout, r.stdout + r.stderr
    assert seen.read_text().split() == ["/tmp/projbase:/tmp/site", "/tmp/proj:/tmp/site",
                                        "/tmp/proj:/tmp/site"]


def test_run_h200_basebuild_builds_each_base_tree(tmp_path):
    """benchmarks/run_h200.sh's basebuild stage builds every folder BASE_TREE
    names (space-separated), the first into /tmp/projbase and the n-th into
    /tmp/projbaseN, so that one call can time three builds. No GPU: a stand-in
    python3 that records where pip installs from and to."""
    seen = tmp_path / "pip_installs.txt"
    r = run_h200_offline(
        tmp_path, "python3",
        '#!/bin/bash\n[ "$1 $2 $3" = "-m pip install" ] || exit 0\n'
        'while [ $# -gt 0 ]; do [ "$1" = --target ] && t=$2; shift; done\n'
        f'echo "$(basename "$PWD") $t" >> "{seen}"\n',
        dirs=(".basetree", ".basetree2"), STAGES="basebuild", BASE_TREE=".basetree .basetree2")
    assert sorted(seen.read_text().splitlines()) == [".basetree /tmp/projbase",
                                                    ".basetree2 /tmp/projbase2"], r.stdout + r.stderr
    assert "basebuild .basetree2 -> /tmp/projbase2 rc=0" in r.stdout, r.stdout + r.stderr


def test_candidates_ab_script_tune_warm_up_off_by_default(tmp_path):
    """Without QMM_WARM_T the tune runs start with no warm-up (WARM_T=0), as on
    a machine already warm."""
    r = run_candidates_ab(tmp_path, QMM_SETTINGS="-;-")
    assert r.stdout.count("tune warm-up WARM_T=0") == 1, r.stdout
