"""One-command fuzz run: ``python -m tests.fuzz --calls 40000 [--seed 0] [--show 3]``.

Prints the table of outcomes per target and a few examples of each defect class; exits 1
when any defect was found.
"""

from __future__ import annotations

import argparse
import sys

from .harness import DEFECTS, fuzz


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    ap.add_argument("--calls", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", action="append", help="only these targets (repeatable)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a hang")
    ap.add_argument("--show", type=int, default=3, help="examples printed per defect class")
    args = ap.parse_args(argv)
    tally = fuzz(args.calls, args.seed, args.target, args.timeout, progress=1000)
    print(tally.table())
    groups = {}
    for d in DEFECTS:
        for case, detail in tally.examples[d]:
            groups.setdefault((d, case[0], case[2]), (case, detail))
    print("\ndefects by (class, target, bad argument):")
    for (d, t, b), (case, detail) in sorted(groups.items(), key=str):
        val = case[1].get(b) if b else None
        first = detail.splitlines()[0][:110] if detail else ""
        print(f"  {d:16} {t:22} {b!s:16} e.g. {val!r:.70} | {first}")
    for d in DEFECTS:
        for case, detail in tally.examples[d][: args.show]:
            print(f"\n[{d}] {case[0]} bad={case[2]} expect={case[3]!r}\n  kwargs={case[1]}")
            if detail:
                print("  " + detail.strip().replace("\n", "\n  ")[:600])
    return 1 if tally.defects else 0


if __name__ == "__main__":
    sys.exit(main())
