"""Time the Claude Code hooks and the statusline as Claude Code runs them: a fresh process each
time, the JSON on stdin, in a small project (a few active sessions, some ended ones).

    .venv/bin/python bench/claude_hooks.py [--sessions N] [--runs R]

Prints the median wall time per command (ms). Bytecode caches follow the environment
(`PYTHONDONTWRITEBYTECODE`), as in Claude Code.
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

BIN = str(Path(sys.executable).parent / "session-manager")


def setup(root: Path, sessions: int) -> str:
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    from session_manager.service import Service

    service = Service(root, actor="bench")
    for index in range(sessions):
        sid = service.start(level="dev", tag=f"b{index}").state.session_id
        if index >= 3:
            service.end(session_id=sid, summary="done")
    active = service.start(level="prod", number=1, topic="bench", budget_usd=1.0).state.session_id
    service.update(session_id=active, add_tasks=["one", "two"])
    service.stage_start(session_id=active)
    service.attach_claude_session(active, "bench-conversation")
    service.backup_now(reason="manual")
    return active


def timed(args: list[str], stdin: str, cwd: Path, runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, input=stdin, text=True, capture_output=True, cwd=cwd, env=env, check=False)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=15)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        setup(root, opts.sessions)
        env = {**os.environ, "CLAUDE_PROJECT_DIR": str(root)}
        base = {"session_id": "bench-conversation", "cwd": str(root), "transcript_path": str(root / "t.jsonl")}
        cases: dict[str, tuple[list[str], dict[str, object] | str]] = {
            "bare python -c pass": ([sys.executable, "-c", "pass"], ""),
            "hook session-start": ([BIN, "hook", "session-start"], {"hook_event_name": "SessionStart"}),
            "hook stop (nothing changed)": ([BIN, "hook", "stop"], {"hook_event_name": "Stop"}),
            "hook pre-tool-use": ([BIN, "hook", "pre-tool-use"], {"hook_event_name": "PreToolUse",
                                                                  "tool_name": "Bash", "tool_input": {}}),
            "hook user-prompt-submit": ([BIN, "hook", "user-prompt-submit"],
                                        {"hook_event_name": "UserPromptSubmit", "prompt": "hi"}),
            "statusline": ([BIN, "statusline"], {"workspace": {"current_dir": str(root)}, "cost": {}}),
        }
        print(f"{opts.sessions + 1} sessions, median of {opts.runs} cold runs (ms)")
        for name, (args, payload) in cases.items():
            stdin = json.dumps({**base, **payload}) if isinstance(payload, dict) else payload
            if name == "hook stop (nothing changed)":  # the first stop after the backup records the stamp
                subprocess.run(args, input=stdin, text=True, capture_output=True, cwd=root, env=env, check=False)
                time.sleep(3)
            print(f"  {name:<30} {timed(args, stdin, root, opts.runs, env):7.1f}")


if __name__ == "__main__":
    main()
