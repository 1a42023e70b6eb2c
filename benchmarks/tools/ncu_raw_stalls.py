"""Where the warps of each profiled kernel wait, from an Nsight Compute report's
raw page (`ncu -i REPORT --page raw --csv --print-units base > RAW.csv`; the
report made with `--set full`, which samples the warps' states).

    python3 ncu_raw_stalls.py RAW.csv [--top 8]

One block a kernel: its name, duration, grid, registers, achieved occupancy,
DRAM throughput, then the stall reasons ranked by their share of the warp
samples (smsp__pcsamp_warps_issue_stalled_*; without those metrics, by the
cycles a warp spends in each state per issued instruction,
smsp__average_warps_issue_stalled_*_per_issue_active.ratio).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys

# All of a state's samples; its *_not_issued twin counts a subset of them.
SAMPLES = re.compile(r"^smsp__pcsamp_warps_issue_stalled_(\w+)$")
PER_ISSUE = re.compile(r"^smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$")
# One line of facts a kernel: (label, metric) in print order.
FACTS = [
    ("time ns", "gpu__time_duration.sum"),
    ("grid", "launch__grid_size"),
    ("block", "launch__block_size"),
    ("regs", "launch__registers_per_thread"),
    ("occupancy %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("dram %", "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"),
    ("issue active %", "sm__inst_issued.avg.pct_of_peak_sustained_active"),
]


def number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def read_rows(path: str) -> list[dict[str, str]]:
    """The kernels' rows of the raw CSV (ncu's units row, whose ID is empty, skipped)."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own messages start otherwise
    rows = list(csv.DictReader(lines))
    return [r for r in rows if (r.get("ID") or "").strip().isdigit()]


def stalls(row: dict[str, str]) -> tuple[str, list[tuple[str, float]]]:
    """(what the shares are of, [(reason, share)]) ranked, largest first."""
    for pattern, what in ((SAMPLES, "share of warp samples"), (PER_ISSUE, "cycles per issued instruction")):
        found: dict[str, float] = {}
        for name, text in row.items():
            m = pattern.match(name or "")
            v = number(text or "")
            if m and v is not None and not name.endswith("_not_issued"):
                found[m.group(1)] = found.get(m.group(1), 0.0) + v
        total = sum(found.values())
        if total > 0:
            if pattern is SAMPLES:
                found = {k: v / total for k, v in found.items()}
            return what, sorted(found.items(), key=lambda kv: -kv[1])
    return "none", []


def report(rows: list[dict[str, str]], top: int) -> str:
    out = []
    for r in rows:
        out.append(f"== {r.get('Kernel Name', '?')[:110]}")
        facts = [f"{label} {r[metric]}" for label, metric in FACTS if r.get(metric, "").strip()]
        out.append("   " + ", ".join(facts))
        what, ranked = stalls(r)
        if ranked:
            out.append(f"   stalls ({what}): " +
                       ", ".join(f"{k} {v:.2f}" for k, v in ranked[:top]))
        else:
            out.append("   stalls: no warp-state metrics in this report")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args(argv)
    rows = read_rows(args.csv)
    if not rows:
        print(f"no kernel rows in {args.csv}", file=sys.stderr)
        return 1
    print(report(rows, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
