"""benchmarks/stream_probe.py without a GPU: the sizes it hands the probe, the
join of the events and ncu runs (kernels in launch order, a loud failure when
they do not match the cases), and the per-weight summary."""

import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import stream_probe as sp  # noqa: E402
from ncu_qmm_gpu import SHAPES, weight_bytes  # noqa: E402

NS = "(anonymous namespace)::"
KERNEL_NAMES = {"empty": f"void {NS}empty_kernel(unsigned int *)",
                "ldg_wave": f"void {NS}ldg_read_kernel<4>(const uint4 *, long, unsigned int *)",
                "ldg_flat": f"void {NS}ldg_read_kernel<4>(const uint4 *, long, unsigned int *)",
                "bulk": f"void {NS}bulk_read_kernel({NS}BulkProbeArgs)"}


def case(name, kind, nbytes, fma=0, events_us=1.0):
    return {"name": name, "kind": kind, "bytes": nbytes, "blocks": 132, "threads": 512,
            "cluster": 1, "smem": 0, "ring": 2 if kind == "bulk" else 0,
            "copies": 3 if kind == "bulk" else 0, "fma_per_kb": fma, "events_us": events_us}


def fake_csv(rows):
    """ncu --csv --page raw --print-units base output: banners, header, units, rows."""
    buf = io.StringIO()
    buf.write("==PROF== Connected to process 77 (/tmp/stream_probe)\n")
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context",
                "Stream", "Block Size", "Grid Size", "Device", "CC", "gpu__time_duration.sum"])
    w.writerow([""] * 11 + ["nsecond"])
    for i, (name, ns) in enumerate(rows):
        w.writerow([str(i), "77", "stream_probe", "127.0.0.1", name, "1", "13", "(512, 1, 1)",
                    "(132, 1, 1)", "0", "9.0", f"{ns:,}"])
    buf.write("stream_probe: 5 cases written to /tmp/x.json\n")
    return buf.getvalue()


MB33 = weight_bytes(14336, 4096)


@pytest.fixture
def runs():
    cases = [case("empty 1x32", "empty", 0),
             case(f"ldg wave {MB33}", "ldg_wave", MB33),
             case(f"ldg flat {MB33}", "ldg_flat", MB33),
             case(f"bulk ring 2 {MB33}", "bulk", (MB33 + 4607) // 4608 * 4608),
             case(f"bulk ring 2 fma 64 {MB33}", "bulk", (MB33 + 4607) // 4608 * 4608, fma=64)]
    events = {"sms": 132, "copy_bandwidth_Bps": 4.0e12, "cases": cases}
    ncu_cases = {"sms": 132, "copy_bandwidth_Bps": None,
                 "cases": [dict(c, events_us=0.0) for c in cases]}
    ns = [2000, 11000, 12000, 10500, 9000]  # the fma case fastest: must not count as a read
    kernels = [(KERNEL_NAMES[c["kind"]], t) for c, t in zip(cases, ns)]
    return events, ncu_cases, kernels


def test_sizes_cover_every_benchmark_weight():
    lines = sp.probe_sizes().split()
    sizes = {int(v) for tag, v in zip(lines[::2], lines[1::2]) if tag == "S"}
    fma = [int(v) for tag, v in zip(lines[::2], lines[1::2]) if tag == "F"]
    assert {weight_bytes(N, K) for shapes in SHAPES.values() for N, K in shapes} | {2 << 30} == sizes
    assert fma == [MB33, weight_bytes(128256, 4096)]


def test_kinds_match_the_probe_source():
    src = (BENCH / "stream_probe.cu").read_text()
    body = src[src.index("const char* kind_name"):]
    body = body[:body.index("\n}\n")]
    assert set(re.findall(r'return "(\w+)";', body)) - {"?"} == set(sp.KERNEL_OF_KIND)
    for kernel in set(sp.KERNEL_OF_KIND.values()):
        assert f"{kernel}(" in src


def test_join_and_summary(runs):
    events, ncu_cases, kernels = runs
    cases = sp.join(events, ncu_cases, fake_csv(kernels))
    assert [c["ncu_us"] for c in cases] == pytest.approx([2.0, 11.0, 12.0, 10.5, 9.0])
    ours = {MB33: [("14336x4096", 21.7)]}
    (row,) = sp.summarize(cases, 4.0e12, ours)
    assert row["bytes"] == MB33 and row["best_read"] == f"bulk ring 2 {MB33}"
    assert row["best_read_us"] == pytest.approx(10.5)
    assert row["best_read_bw_frac"] == pytest.approx(MB33 / 10.5e-6 / 4.0e12)
    assert row["goal_us"] == pytest.approx(MB33 / (0.7 * 4.0e12) * 1e6)
    assert row["ours_m1"] == [{"shape": "14336x4096", "us": 21.7}]


def test_join_fails_loudly(runs):
    events, ncu_cases, kernels = runs
    with pytest.raises(ValueError, match="profiled kernels"):
        sp.join(events, ncu_cases, fake_csv(kernels[:-1]))
    swapped = [kernels[0], kernels[3], kernels[2], kernels[1], kernels[4]]
    with pytest.raises(ValueError, match="got kernel"):
        sp.join(events, ncu_cases, fake_csv(swapped))
    other = dict(ncu_cases, cases=ncu_cases["cases"][::-1])
    with pytest.raises(ValueError, match="different case lists"):
        sp.join(events, other, fake_csv(kernels))


def test_parse_writes_json(tmp_path, runs):
    events, ncu_cases, kernels = runs
    (tmp_path / "stream_probe_events.json").write_text(json.dumps(events))
    (tmp_path / "stream_probe_ncu_cases.json").write_text(json.dumps(ncu_cases))
    (tmp_path / "stream_probe_ncu.csv").write_text(fake_csv(kernels))
    ours = {"results": [{"N": 14336, "K": 4096, "M": 1, "dtype": "float16",
                         "weight_bytes": MB33, "ours_us": 21.7}]}
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    sp.parse(tmp_path, tmp_path / "out", tmp_path / "ours.json")
    out = json.loads((tmp_path / "out" / "stream_probe_h200.json").read_text())
    assert out["copy_bandwidth_Bps"] == 4.0e12 and len(out["cases"]) == 5
    assert out["summary"][0]["ours_m1"][0]["us"] == 21.7
    assert "cache-control all" in out["method"]


def test_ncu_qmm_shape_selection():
    """ncu_qmm_gpu.py --shapes: the model lists' shapes keep their family,
    others form "extra" in the order given; no list means every model shape."""
    from ncu_qmm_gpu import requested_shapes

    assert requested_shapes("") == SHAPES
    got = requested_shapes("2048x4096,1024x1024,4096x4096,8192x1024")
    assert got == {"llama3-8b": [(4096, 4096)], "qwen3-0.6b": [(1024, 1024)],
                   "extra": [(2048, 4096), (8192, 1024)]}
    assert requested_shapes("1024x2048") == {"qwen3-0.6b": [(1024, 2048)]}


def test_ncu_qmm_records_the_plan_and_knobs(monkeypatch):
    """Each ncu case records our op's launch plan (on a CPU build: the plan
    for a 132-SM GPU with SMs / split clusters), and machine info the
    MLX_KERNELS_* knobs in effect and the folder of the build timed."""
    import mlx.core as mx
    from _common import machine_info
    from ncu_qmm_gpu import PLAN_FIELDS, planned

    p = planned(1, 14336, 4096, "float16")
    assert set(p) == set(PLAN_FIELDS) and p["kernel"] == "tensor_core_bulk"
    if not mx.cuda.is_available():
        assert (p["split_k"], p["tiles_per_block"]) == (4, 28)
    monkeypatch.setenv("MLX_KERNELS_QMM_RING", "3")
    info = machine_info("cpu")
    assert info["knobs"]["MLX_KERNELS_QMM_RING"] == "3"
    # the build timed (an A/B's builds differ here, not in "git")
    import mlx_kernels
    assert info["mlx_kernels_dir"] == str(Path(mlx_kernels.__file__).resolve().parent)


def test_ncu_qmm_replot_names_the_card(tmp_path, monkeypatch):
    """ncu_qmm_gpu.py plot: each results JSON's plots are drawn next to it,
    one per family, titled with the GPU its machine info names."""
    import bench_qmm_gpu
    import ncu_qmm_gpu

    calls = []
    monkeypatch.setattr(bench_qmm_gpu, "plot_families",
                        lambda cases, fams, dtypes, out, stem, method, gpu: calls.append(
                            (len(cases), fams, dtypes, out, stem, gpu)))
    case = {"N": 1024, "K": 1024, "M": 1, "dtype": "bfloat16", "family": "qwen3-0.6b"}
    payload = {"machine": {"gpu": "NVIDIA H100 80GB HBM3"},
               "results": [case, dict(case, N=2048, K=4096, family="extra")]}
    (tmp_path / "run_a.json").write_text(json.dumps(payload))
    ncu_qmm_gpu.replot(type("Args", (), {"json": [str(tmp_path / "run_a.json")]}))
    assert calls == [(2, {"qwen3-0.6b": [(1024, 1024)], "extra": [(2048, 4096)]}, ["bfloat16"],
                      tmp_path, "run_a", "NVIDIA H100 80GB HBM3")]


def test_ncu_qmm_parse_grid_without_small_m(tmp_path, monkeypatch, capsys):
    """ncu_qmm_gpu.py parse on an A/B grid of larger M only (no M = 1, no
    M <= 8; session 17's tune run crashed on it): kernels go to their cases
    in launch order, and the summary shows nan / "-" where its M are missing."""
    import bench_qmm_gpu
    import ncu_qmm_gpu

    monkeypatch.setattr(bench_qmm_gpu, "plot_families", lambda *a, **k: None)
    bw = 4.0e12
    cases = [{"family": "qwen3-0.6b", "N": 1024, "K": 1024, "M": m, "dtype": "float16",
              "weight_bytes": 1024 * 1024 // 2 + 2 * 2 * 1024 * 16} for m in (24, 64)]
    (tmp_path / "cases.json").write_text(json.dumps(
        {"cases": cases, "copy_bandwidth_Bps": bw, "machine": {"gpu": "test"}}))
    header = '"ID","Kernel Name","gpu__time_duration.sum"\n"","","nsecond"\n'
    rows = [("mlx_kernels::tc_qmm_kernel<__half, 4, 1, 4, false>", 8700),
            ("cutlass_gemm_mlx", 21000),
            ("mlx_kernels::tc_qmm_kernel<__half, 4, 1, 8, false>", 13900),
            ("cutlass_gemm_mlx", 15000), ("mlx_reduce", 5000)]
    body = "".join(f'"{i}","{n}","{t}"\n' for i, (n, t) in enumerate(rows))
    (tmp_path / "run.csv").write_text("==PROF== banner\n" + header + body)
    args = type("Args", (), {"cases": str(tmp_path / "cases.json"), "csv": str(tmp_path / "run.csv"),
                             "out": str(tmp_path / "out"), "per_case": True})
    ncu_qmm_gpu.parse(args)
    table = capsys.readouterr().out.splitlines()
    summary = next(line for line in table if line.startswith("1024x1024"))
    assert summary.split()[2] == "nan" and summary.split()[-1] == "-"
    result = json.loads((tmp_path / "out" / "qmm_h200_ncu.json").read_text())["results"]
    assert [(c["M"], c["ours_us"], c["mlx_us"]) for c in result] == [
        (24, pytest.approx(8.7), pytest.approx(21.0)), (64, pytest.approx(13.9), pytest.approx(20.0))]
    assert result[1]["speedup"] == pytest.approx(20.0 / 13.9)


def test_ncu_qmm_compare_groups_by_plan(tmp_path, capsys):
    """ncu_qmm_gpu.py compare: NEW's time over the geometric mean of the
    bases', per case, grouped by NEW's (kernel, m_tiles); cases missing from
    a base are left out; the two bases' ratio is printed as the noise."""
    import ncu_qmm_gpu

    def write(name, times):
        rows = [{"N": 1024, "K": 1024, "M": m, "dtype": "float16", "ours_us": t,
                 "plan": {"kernel": "tensor_core", "m_tiles": 8 if m > 32 else 4}}
                for m, t in times.items()]
        (tmp_path / name).write_text(json.dumps({"results": rows}))
        return str(tmp_path / name)

    new = write("new.json", {24: 9.0, 32: 8.0, 64: 12.0, 48: 5.0})
    base1 = write("b1.json", {24: 8.0, 32: 10.0, 64: 16.0})
    base2 = write("b2.json", {24: 8.0, 32: 10.0, 64: 9.0})
    groups = ncu_qmm_gpu.compare(type("Args", (), {"json": [new, base1, base2], "per_case": False}))
    assert sorted(groups) == [("tensor_core", 4), ("tensor_core", 8)]
    assert groups[("tensor_core", 4)] == [pytest.approx(9.0 / 8.0), pytest.approx(0.8)]
    assert groups[("tensor_core", 8)] == [pytest.approx(12.0 / 12.0)]
    out = capsys.readouterr().out
    assert "base 2 / base 1: geomean" in out and "0.562-1.000" in out
    with pytest.raises(SystemExit):
        ncu_qmm_gpu.compare(type("Args", (), {"json": [new], "per_case": False}))


def test_ncu_qmm_run_reports_progress(tmp_path, monkeypatch, capsys):
    """ncu_qmm_gpu.py run (here on the CPU stream, the copy and the profiling
    range stubbed): writes every case with its plan, and reports each step on
    stderr, so that a process that profiles nothing shows where it stopped."""
    import argparse

    import bench_qmm_gpu
    import mlx.core as mx
    import ncu_qmm_gpu

    monkeypatch.setattr(bench_qmm_gpu, "copy_bandwidth_torch", lambda: 2.5e12)
    monkeypatch.setattr(mx, "set_default_device", lambda device: None)
    profiled = []
    monkeypatch.setattr(ncu_qmm_gpu, "profile_pairs", lambda prepared: profiled.append(len(prepared)))
    cases = tmp_path / "cases.json"
    args = argparse.Namespace(cases=str(cases), dtypes="float16", mvalues="1,3", shapes="1024x1024")
    ncu_qmm_gpu.run(args)
    meta = json.loads(cases.read_text())
    assert meta["copy_bandwidth_Bps"] == 2.5e12 and profiled == [2]
    assert [(c["N"], c["K"], c["M"], c["dtype"]) for c in meta["cases"]] == [
        (1024, 1024, 1, "float16"), (1024, 1024, 3, "float16")]
    err = capsys.readouterr().err
    for step in ("start", "copy bandwidth 2.50 TB/s", "1024x1024 float16: weights quantized",
                 "1024x1024 float16 M=3: ours warmed up", "1024x1024 float16 M=3: MLX's warmed up",
                 "2 cases prepared; profiling"):
        assert step in err, (step, err)
