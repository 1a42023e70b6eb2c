"""benchmarks/ncu_qmm_omit.py without a GPU: the omit mask read back from the
kernel names ncu prints, the assignment of launches to (case, mask) with loud
failures, the parts' costs; and the binding's argument check."""

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from mlx_kernels import _ext

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import ncu_qmm_omit as omit  # noqa: E402

NS = "mlx_kernels::cuda::(anonymous namespace)::"


def bulk_name(mask, mt=1):
    return f"void {NS}tc_qmm_bulk_kernel<__half, 4, {mt}, {mask}>({NS}BulkArgs)"


def fake_csv(rows):
    buf = io.StringIO()
    buf.write("==PROF== Connected to process 9 (/usr/bin/python3.12)\n")
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["ID", "Kernel Name", "gpu__time_duration.sum"])
    w.writerow(["", "", "nsecond"])
    for i, (name, ns) in enumerate(rows):
        w.writerow([str(i), name, f"{ns:,}"])
    return buf.getvalue()


def meta(masks=(0, 1, 2, 4, 7)):
    plan = {"kernel": "tensor_core_bulk", "split_k": 4, "warps": 16, "ring": 2,
            "tiles_per_block": 28, "steps_per_split": 2, "m_tiles": 1, "grid": [4, 32, 1],
            "smem_bytes": 179712}
    cases = [{"N": 14336, "K": 4096, "M": m, "weight_bytes": 33030144, "plan": plan}
             for m in (1, 8)]
    return {"masks": list(masks), "cases": cases}


def launches(m, times):
    return [(bulk_name(mask), t) for _ in m["cases"] for mask, t in zip(m["masks"], times)]


def test_kernel_mask_from_names():
    assert omit.kernel_mask(bulk_name(0)) == 0
    assert omit.kernel_mask(bulk_name(7, mt=2)) == 7
    assert omit.kernel_mask(
        "_ZN11mlx_kernels4cuda52_GLOBAL__N__9d71352a_19_quantized_matmul_cu_204247d1"
        "18tc_qmm_bulk_kernelI6__halfLi4ELi2ELi5EEEvNS1_8BulkArgsE") == 5
    assert omit.kernel_mask(f"void {NS}tc_qmm_kernel<__half, 4, 1, 1>(TcArgs)") is None


def test_assign_and_parts():
    m = meta()
    cases = omit.assign(m, [(n, t / 1000) for n, t in launches(m, [21700, 11200, 20900, 21000, 10100])])
    assert cases[1]["us"] == {"0": 21.7, "1": 11.2, "2": 20.9, "4": 21.0, "7": 10.1}
    assert cases[0]["part_us"] == pytest.approx(
        {"math": 10.5, "x staging": 0.8, "split-K reduction": 0.7})


def test_assign_fails_loudly():
    m = meta()
    good = [(n, t / 1000) for n, t in launches(m, [5, 4, 3, 2, 1])]
    with pytest.raises(ValueError, match="bulk launches"):
        omit.assign(meta(), good[:-1])
    swapped = good[:]
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(ValueError, match="mask 1 ran"):
        omit.assign(meta(), swapped)
    other = good + [(f"void {NS}tc_qmm_kernel<__half, 4, 1, 1>(TcArgs)", 0.003)]
    with pytest.raises(ValueError, match="other kernels"):
        omit.assign(meta(), other)


def test_parse_writes_json(tmp_path):
    m = meta(masks=(0, 1))
    (tmp_path / "cases.json").write_text(json.dumps(m))
    (tmp_path / "omit.csv").write_text(fake_csv(launches(m, [22000, 11000])))
    args = omit.argparse.Namespace(cases_json=str(tmp_path / "cases.json"),
                                   csv=str(tmp_path / "omit.csv"), out=str(tmp_path))
    omit.parse(args)
    out = json.loads((tmp_path / "qmm_h200_ncu_omit.json").read_text())
    assert out["masks"] == [0, 1] and out["results"][0]["part_us"] == {"math": pytest.approx(11.0)}
    assert "cache-control all" in out["method"]


def test_cases_spec():
    assert omit.parse_cases(["14336x4096:1,8", "4096x4096:16"]) == [
        (14336, 4096, 1), (14336, 4096, 8), (4096, 4096, 16)]


def test_binding_checks_the_mask():
    for bad in (-1, 8, 100):
        with pytest.raises(ValueError, match="mask must be in 0..7"):
            _ext.set_cuda_quantized_matmul_bulk_omit(bad)
    _ext.set_cuda_quantized_matmul_bulk_omit(0)  # the default, accepted
