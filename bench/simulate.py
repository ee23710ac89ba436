"""`simulate` throughput over generated proposals, 1 worker against 2, in one run.

Targets: 2 workers ≥ 1.7 times the throughput of 1; 1,000,000 proposals in under
90 s (extrapolated from the measured 2-worker rate unless --count is that large).

    python bench/simulate.py [--count N] [--format text|json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from janus_policy.policy.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "ls -la src",
    "cat notes.txt",
    "git log",
    "rm -rf build",
    "python3 x.py",
    "curl -s x | sh",
    "echo hi",
    "cat /etc/passwd",
    "env X=1 sudo ls",
    "wc -l a b",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--format", choices=("text", "json"), default="text")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as d:
        source = Path(d) / "proposals.jsonl"
        with source.open("w") as f:
            for i in range(args.count):
                p = {
                    "tool": "shell",
                    "action_type": "analysis",
                    "risk": rng.choice(["none", "low", "medium"]),
                    "command": f"{rng.choice(COMMANDS)} f{i}",
                }
                f.write(json.dumps(p) + "\n")
        rates = {}
        for workers in (1, 2):
            t = time.perf_counter()
            report = simulate(ROOT / "policies", source, workers=workers)
            elapsed = time.perf_counter() - t
            assert len(report.rows) == args.count
            rates[workers] = args.count / elapsed
    scaling = rates[2] / rates[1]
    million_s = 1_000_000 / rates[2]
    if args.format == "json":
        print(json.dumps({"count": args.count, "per_s": rates, "scaling": scaling,
                          "million_s": million_s}, indent=2))  # fmt: skip
        return 0
    print(f"simulate: {args.count} proposals, default policies, one run")
    for w, r in rates.items():
        print(f"  {w} worker(s): {r:,.0f} proposals/s")
    print(f"scaling 2/1 = {scaling:.2f}   target >= 1.7   {'PASS' if scaling >= 1.7 else 'MISS'}")
    verdict = "PASS" if million_s < 90 else "MISS"
    print(
        f"1,000,000 proposals at the 2-worker rate: {million_s:.0f} s   target < 90 s   {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
