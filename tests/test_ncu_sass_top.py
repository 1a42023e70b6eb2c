"""benchmarks/tools/ncu_sass_top.py without a GPU: a synthetic source-page
export of two kernels, the top instructions by warp samples with their
leading stall reasons and shares."""

import csv
import io
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "benchmarks" / "tools"
sys.path.insert(0, str(TOOLS))

import ncu_sass_top as st  # noqa: E402

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "stall_barrier",
          "stall_long_sb", "stall_wait", "stall_long_sb (Not Issued)"]


def export(tmp_path):
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["Kernel Name", "kernel_a"])
    w.writerow(HEADER)
    w.writerow(["0x10", "HMMA.16816.F32 R1, R2, R3, R1", "10", "0", "0", "10", "0"])
    w.writerow(["0x20", "UCGABAR_WAIT", "60", "60", "0", "0", "0"])
    w.writerow(["0x30", "@P0 BRA.U.ANY 0x20", "30", "0", "24", "6", "24"])
    w.writerow(["Kernel Name", "kernel_b"])
    w.writerow(HEADER)
    w.writerow(["0x10", "LDG.E.128 R4, [R2]", "1,000", "0", "1,000", "0", "1,000"])
    p = tmp_path / "sass.csv"
    p.write_text(buf.getvalue())
    return p


def test_kernels_and_top(tmp_path, capsys):
    ks = st.kernels(export(tmp_path))
    assert [k[0] for k in ks] == ["kernel_a", "kernel_b"]
    assert len(ks[0][2]) == 3 and len(ks[1][2]) == 1
    text = st.top(*ks[0], n=2)
    lines = text.splitlines()
    assert lines[0] == "== kernel_a: 3 instructions, 100 samples"
    assert "60.0%" in lines[1] and "UCGABAR_WAIT" in lines[1] and "barrier 100%" in lines[1]
    # the (Not Issued) columns are not counted twice
    assert "30.0%" in lines[2] and "long_sb 80%, wait 20%" in lines[2]
    assert len(lines) == 3  # --top 2
    st.main([str(tmp_path / "sass.csv"), "--kernel", "1"])
    out = capsys.readouterr().out
    assert "kernel_b: 1 instructions, 1000 samples" in out and "kernel_a" not in out
