"""The SASS instructions that collect the most warp samples, per kernel, from
an `ncu --page source --print-source sass --csv` export (run_h200.sh stages
prof and attnprof write one: *_sass.csv), with each one's leading stall
reasons and the share of the kernel's samples it holds.

    python benchmarks/tools/ncu_sass_top.py SASS.csv [--top 25] [--kernel 0]
"""

from __future__ import annotations

import argparse
import csv
import sys

from ncu_raw_stalls import number


def kernels(path):
    """[(kernel name, header, rows)] in the order of the export."""
    out = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] == "Kernel Name":
                out.append([row[1], None, []])
            elif out and out[-1][1] is None:
                out[-1][1] = row
            elif out:
                out[-1][2].append(row)
    return out


def num(v):
    return number(v) or 0.0  # an empty or text cell counts as no samples


def top(name, header, rows, n):
    col = {h: i for i, h in enumerate(header)}
    samples = col["Warp Stall Sampling (All Samples)"]
    stalls = [h for h in header if h.startswith("stall_") and "(Not Issued)" not in h]
    total = sum(num(r[samples]) for r in rows) or 1.0
    lines = [f"== {name}: {len(rows)} instructions, {int(total)} samples"]
    for r in sorted(rows, key=lambda r: -num(r[samples]))[:n]:
        s = num(r[samples])
        lead = sorted(((num(r[col[h]]), h[6:]) for h in stalls), reverse=True)[:3]
        why = ", ".join(f"{h} {v / s:.0%}" for v, h in lead if v > 0) if s else ""
        lines.append(f"{s / total:6.1%}  {r[col['Address']]:>6}  {r[col['Source']][:60]:<60}  {why}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--kernel", type=int, default=None, help="only the n-th kernel (0-based)")
    args = ap.parse_args(argv)
    ks = kernels(args.csv)
    if not ks:
        sys.exit(f"no 'Kernel Name' section in {args.csv}")
    for i, (name, header, rows) in enumerate(ks):
        if args.kernel is None or args.kernel == i:
            print(top(name, header, rows, args.top))


if __name__ == "__main__":
    main()
