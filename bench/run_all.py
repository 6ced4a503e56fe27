"""Run every benchmark and print each budget with its figure and ratio.

    .venv/bin/python bench/run_all.py            full sizes (10,000 sessions, 400,000 lines; ~10 min)
    .venv/bin/python bench/run_all.py --quick    tiny sizes: a smoke run proving they still work (CI)

Each benchmark measures its anchor side by side in the same run (the machines are noisy;
absolute times drift), so the ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = {
    "bench_cli.py": [],
    "bench_mcp.py": [],
    "bench_backup.py": [],
    "bench_reports.py": [],
    "bench_usage.py": [],
    "bench_scale.py": [],
}
QUICK = {
    "bench_cli.py": ["--runs", "2", "--sessions", "2"],
    "bench_mcp.py": ["--rounds", "3", "--starts", "1", "--no-reference", "--history", "20"],
    "bench_backup.py": ["--sessions", "200", "--rounds", "2"],
    "bench_reports.py": ["--sessions", "200", "--runs", "1"],
    "bench_usage.py": ["--lines", "2000", "--runs", "1", "--no-ccusage"],
    "bench_scale.py": ["--sizes", "10", "50", "--runs", "1"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no reference tools: a smoke run")
    parser.add_argument("--full", action="store_true", help="also 50,000 sessions (bench_scale.py)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.full:
        plan = {**FULL, "bench_scale.py": ["--full"]}
    failed = []
    for script, extra in plan.items():
        print(f"\n== {script} {' '.join(extra)}", flush=True)
        began = time.perf_counter()
        result = subprocess.run([sys.executable, str(HERE / script), *extra])
        print(f"   ({time.perf_counter() - began:.1f} s)")
        if result.returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    print("\nall benchmarks ran" + (" (quick smoke sizes: the figures mean nothing)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
