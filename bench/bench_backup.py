"""Benchmark: a backup with one session changed, beside `git status` on the same tree, at 1,000 and 10,000 sessions.

    .venv/bin/python bench/bench_backup.py [--quick] [--sessions 1000,10000] [--rounds 7]

The sessions are written directly (they only need to look like sessions), committed on the
user's branch so that `git status` has to look at every file, as the backup does. Each round
changes one session, then times `git status --porcelain`, the backup in-process
(`Service.backup_now()`, what a hook or the server pays) and the backup as a CLI process
(`session-manager backup`, Python start-up included). Medians are printed with their ratio to
`git status`; the budget is a backup under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from session_manager.levels import LEVELS  # noqa: E402
from session_manager.service import Service  # noqa: E402

BUDGET_SECONDS = 0.5
IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def generate(root: Path, count: int) -> list[Path]:
    """`count` session folders with the usual files, spread over the four levels."""
    levels = list(LEVELS.values())
    folders = []
    for i in range(count):
        level = levels[i % len(levels)]
        episode = f"_{i % 1000:03d}" if level.needs_number else ""
        session_id = f"{level.prefix}{episode}_2026{1 + i % 12:02d}{1 + i % 28:02d}_s{i:05d}"
        folder = root / ".claude" / level.dirname / "sessions" / session_id
        folder.mkdir(parents=True)
        state = {"schema_version": 1, "session_id": session_id, "status": "completed",
                 "stages": {f"stage_{n}": {"status": "completed", "attempts": 1} for n in range(6)},
                 "cost_tracking": {"total_cost": round(i * 0.01, 2)}}
        (folder / "pipeline_status.json").write_text(json.dumps(state, indent=2))
        (folder / "metadata.json").write_text(json.dumps({"session_id": session_id, "topic": f"topic {i}"}))
        (folder / "events.jsonl").write_text(json.dumps({"event": "session_started", "session_id": session_id}) + "\n")
        (folder / "context.md").write_text(f"# {session_id}\n\nSome context for session {i}.\n")
        folders.append(folder)
    return folders


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(count: int, rounds: int) -> dict[str, float]:
    """Medians (seconds) of `git status`, the backup in-process and as a CLI process, one session
    changed before each, on a fresh project of `count` sessions."""
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        root = Path(tmp)
        git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True)  # noqa: E731
        git("init", "-q", "-b", "main")
        started = time.perf_counter()
        folders = generate(root, count)
        files = sum(1 for _ in (root / ".claude").rglob("*.*"))
        git("add", "-A")
        git("commit", "-q", "-m", "the user's tree")
        time.sleep(1.1)  # no racily-clean index entries: both indexes start from a settled tree
        service = Service(root, actor="bench")
        first = timed(service.backup_now)
        print(f"{count:,} sessions, {files:,} files: generated and committed in"
              f" {time.perf_counter() - started - first:.1f} s; first backup {first:.2f} s")
        service.backup_now()
        git("status", "--porcelain")
        status_times, backup_times, cli_times = [], [], []
        cli = [sys.executable, "-m", "session_manager", "backup", "--json"]
        for n in range(rounds):
            for step, backup in ((0, service.backup_now), (1, lambda: subprocess.run(cli, cwd=root, check=True, capture_output=True))):
                folder = folders[(n * 2 + step) * 7919 % len(folders)]
                with (folder / "events.jsonl").open("a") as handle:
                    handle.write(json.dumps({"event": "bench", "round": n}) + "\n")
                status_times.append(timed(lambda: git("status", "--porcelain")))
                (backup_times if step == 0 else cli_times).append(timed(backup))
        commits = subprocess.run(["git", "rev-list", "--count", "session-backups"], cwd=root,
                                 capture_output=True, text=True).stdout.strip()
    status, inproc, process = (statistics.median(t) for t in (status_times, backup_times, cli_times))
    print(f"  one session changed per backup; medians of {rounds} rounds ({commits} backup commits)")
    return {"status": status, "inproc": inproc, "process": process}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default=None, help="comma-separated sizes (default 1000,10000; --quick 200,1000)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller trees and fewer rounds")
    args = parser.parse_args()
    os.environ.update(IDENTITY)
    sizes = [int(n) for n in (args.sessions or ("200,1000" if args.quick else "1000,10000")).split(",")]
    rounds = min(args.rounds, 3) if args.quick else args.rounds
    results = {count: measure(count, rounds) for count in sizes}
    print()
    print(f"{'sessions':>9} {'git status':>11} {'backup':>9} {'ratio':>6} {'backup CLI':>11} {'ratio':>6}")
    for count, r in results.items():
        verdict = "" if r["inproc"] < BUDGET_SECONDS else "  OVER BUDGET"
        print(f"{count:>9,} {r['status'] * 1000:>9.0f}ms {r['inproc'] * 1000:>7.0f}ms {r['inproc'] / r['status']:>5.2f}x"
              f" {r['process'] * 1000:>9.0f}ms {r['process'] / r['status']:>5.2f}x{verdict}")
    print("ratio: against `git status --porcelain` on the same tree; backup: in-process"
          " (what a hook or the server pays); backup CLI: Python start-up included")


if __name__ == "__main__":
    main()
