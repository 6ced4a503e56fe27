"""Benchmark: cold runs of `session-manager status` and of the Claude Code hooks.

    .venv/bin/python bench/bench_cli.py [--runs 11] [--sessions 20]

Each command is a fresh process, as Claude Code and a terminal start it, in a project with
`--sessions` active sessions. Printed: the median of each, beside the bare interpreter
(`python -c pass`) and `python -c "import pydantic"` measured in the same run, and the ratio
to the design's budget of 250 ms.
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

PYTHON = sys.executable
BUDGET_MS = 250.0


def timed(argv: list[str], cwd: Path, stdin: str = "") -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=cwd, input=stdin.encode(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    os.environ.update({"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"})
    sm = [PYTHON, "-m", "session_manager"]
    for n in range(args.sessions):
        subprocess.run([*sm, "start", "dev", f"task {n}", "--tag", f"s{n}"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*sm, "task", "add", "open work"], cwd=root, check=True, stdout=subprocess.DEVNULL)
    hook_input = json.dumps({"session_id": "bench-conversation", "cwd": str(root), "transcript_path": "",
                             "hook_event_name": "SessionStart", "source": "startup"})
    stop_input = json.dumps({"session_id": "bench-conversation", "cwd": str(root), "hook_event_name": "Stop"})
    commands = {
        "python -c pass": ([PYTHON, "-c", "pass"], ""),
        "python -c 'import pydantic'": ([PYTHON, "-c", "import pydantic"], ""),
        "session-manager status": ([*sm, "status"], ""),
        "hook session-start": ([*sm, "hook", "session-start"], hook_input),
        "hook stop (autosave)": ([*sm, "hook", "stop"], stop_input),
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved, so drifting load hits every command alike
        for name, (argv, stdin) in commands.items():
            if name.startswith("hook stop"):
                subprocess.run([*sm, "task", "add", "autosave me"], cwd=root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # something for the autosave to commit
            samples[name].append(timed(argv, root, stdin))
    floor = statistics.median(samples["python -c pass"])
    for name, values in samples.items():
        median = statistics.median(values)
        budget = "" if name.startswith("python") else f"  {median / BUDGET_MS:.2f}x of the 250 ms budget"
        print(f"{name:<30} {median:7.1f} ms  ({median / floor:5.1f}x bare python){budget}")


if __name__ == "__main__":
    main()
