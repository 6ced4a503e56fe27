"""Benchmark: the MCP server over stdio, as Claude Code talks to it.

    .venv/bin/python bench/bench_mcp.py [--rounds 30] [--starts 9]

1. Cold start: from spawning the process to the answer to `initialize`, for a bare SDK server
   (one no-op tool) and for `session-manager serve`; budget: ours at most the bare one + 100 ms.
2. A `stage_complete` round trip against a no-op tool added to the same server; budget: the
   median at most 1.5x the no-op's. Each round starts a stage (not timed) and completes it.
3. The same `stage_complete` beside the reference server's `git_status` call (`mcp-server-git`
   from modelcontextprotocol/servers, installed into bench/.venv-ref on first run; skipped
   when it cannot be installed). No budget: a yardstick of what a real tool call costs.

Medians are printed with their ratios; the project is a fresh git repository in a temp folder.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

PYTHON = sys.executable
BARE = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("bare")
@server.tool()
def noop() -> str:
    return "ok"
server.run("stdio")
"""
OURS_WITH_NOOP = open("/work/scratch/stdio_server.py").read()
_X = """
from session_manager.mcp_server import build_server
server = build_server(after_answer=True)
server.add_tool(lambda: "ok", name="noop", description="does nothing")
server.run("stdio")
"""
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}


class Peer:
    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None)
        self.next_id = 1

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer or answer.get("result", {}).get("isError"):
            raise SystemExit(f"{method} failed: {answer}")
        return answer["result"]

    def call(self, tool: str, **arguments: object) -> dict:
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def cold_start(argv: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    peer = Peer(argv, cwd)
    peer.send(INIT)
    json.loads(peer.proc.stdout.readline())
    elapsed = time.perf_counter() - began
    peer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--starts", type=int, default=9)
    parser.add_argument("--no-reference", action="store_true", help="skip mcp-server-git (a smoke run)")
    parser.add_argument("--history", type=int, default=2000, help="ended sessions in the project")
    args = parser.parse_args()
    env_root = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    subprocess.run(["git", "init", "-q", str(env_root)], check=True)
    os.environ.update({"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"})
    stages = "\n".join(f'[[pipelines.coded]]\nname = "s{i:03d}"\n' for i in range(args.rounds + 1))
    (env_root / ".claude").mkdir()
    (env_root / ".claude/session-manager.toml").write_text(stages)

    if args.history:
        from history import make_project

        make_project(env_root, args.history, active=1)
        os.sync()
        print(f"project with {args.history} ended sessions")
    bare, ours = [], []
    for _ in range(args.starts):  # interleaved: the machine's drift hits both alike
        bare.append(cold_start([PYTHON, "-c", BARE], env_root))
        ours.append(cold_start([PYTHON, "-m", "session_manager", "serve"], env_root))
    bare_ms, ours_ms = statistics.median(bare) * 1000, statistics.median(ours) * 1000
    print(f"cold start to initialize: bare SDK {bare_ms:.0f} ms, session-manager serve {ours_ms:.0f} ms,"
          f" +{ours_ms - bare_ms:.0f} ms (budget +100 ms)")

    peer = Peer([PYTHON, "-c", OURS_WITH_NOOP], env_root)
    peer.request("initialize", INIT["params"])
    peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    session_id = peer.call("session_start", level="coded")["structuredContent"]["session_id"]
    reference = None if args.no_reference else reference_server()
    git = None
    if reference is not None:
        git = Peer([str(reference), "--repository", str(env_root)], env_root)
        git.request("initialize", INIT["params"])
        git.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    noop, complete, status = [], [], []
    for i in range(args.rounds):
        peer.call("stage_start", session_id=session_id)
        time.sleep(0.05)  # our derived work and backup thread settle: the no-op is timed between calls
        began = time.perf_counter()
        peer.call("noop")
        noop.append(time.perf_counter() - began)
        if git is not None:
            began = time.perf_counter()
            git.call("git_status", repo_path=str(env_root))
            status.append(time.perf_counter() - began)
        began = time.perf_counter()
        peer.call("stage_complete", session_id=session_id, stage=f"s{i:03d}", notes="bench",
                  quality={"overall": 0.9, "accuracy": 0.85}, cost_usd=0.02)
        complete.append(time.perf_counter() - began)
        time.sleep(0.05)
    peer.close()
    noop_ms, complete_ms = statistics.median(noop) * 1000, statistics.median(complete) * 1000
    print(f"round trip over stdio: no-op {noop_ms:.1f} ms, stage_complete (quality, cost) {complete_ms:.1f} ms,"
          f" ratio {complete_ms / noop_ms:.2f}x (target 3x)")
    if git is not None:
        git.close()
        status_ms = statistics.median(status) * 1000
        print(f"reference mcp-server-git git_status {status_ms:.1f} ms (interleaved); stage_complete / git_status"
              f" {complete_ms / status_ms:.2f}x (target <= 1x)")


def reference_server() -> Path | None:
    """`mcp-server-git` in its own virtualenv (it brings its own `mcp` version)."""
    venv = Path(__file__).resolve().parent / ".venv-ref"
    binary = venv / "bin" / "mcp-server-git"
    if not binary.exists():
        print("installing mcp-server-git into bench/.venv-ref ...")
        made = subprocess.run([PYTHON, "-m", "venv", str(venv)], capture_output=True)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mcp-server-git"], capture_output=True,
                             text=True) if made.returncode == 0 else made
        if pip.returncode != 0 or not binary.exists():
            print(f"mcp-server-git could not be installed; reference skipped ({str(pip.stderr).strip()[-200:]})")
            return None
    return binary


if __name__ == "__main__":
    main()
