"""Transcript import speed beside ccusage, on the same corpus, in one run.

    .venv/bin/python bench/bench_usage.py [--lines 400000] [--runs 3] [--corpus DIR]

Generates (or reuses) a Claude Code transcript corpus (see bench/transcripts.py), installs
ccusage into bench/node_modules when it is missing (npm, pinned to a release that ships the
Linux binary), then alternates runs of:

* `ccusage claude daily --json --offline` with CLAUDE_CONFIG_DIR pointing at the corpus;
* `session-manager usage daily --json` in a fresh project (nothing imported yet), and again in
  the same project (nothing new: it should read almost nothing).

Both are timed as whole processes. It prints the medians, the ratios, the bytes the re-run
read, and compares the token totals per day and per model with ccusage's and with the
corpus's truth.

Then attribution (`--attribution-only` runs just this part): a corpus of 50 overlapping
sessions and 200 conversations (bench/transcripts.py `make_attribution_corpus`), conversations
bound to sessions by time (a quarter resumed into a second session), every session attached,
and the check that the sessions' totals plus the unattributed usage equal the corpus's total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CCUSAGE_VERSION = "20.0.24"  # newer 20.x releases may lack the Linux binary package
CCUSAGE = HERE / "node_modules" / ".bin" / "ccusage"
sys.path.insert(0, str(HERE))

from transcripts import make_attribution_corpus, make_corpus  # noqa: E402


def ensure_ccusage() -> Path | None:
    if not CCUSAGE.exists():
        npm = shutil.which("npm")
        if npm is None:
            print("npm not found: ccusage is skipped")
            return None
        print(f"installing ccusage@{CCUSAGE_VERSION} into {HERE / 'node_modules'} ...")
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(HERE),
                        f"ccusage@{CCUSAGE_VERSION}"], check=True, capture_output=True)
    probe = subprocess.run([str(CCUSAGE), "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"ccusage does not run here: {probe.stderr.strip()[:200]}")
        return None
    return CCUSAGE


def corpus(folder: Path | None, lines: int) -> tuple[Path, dict]:
    base = folder or Path(tempfile.gettempdir()) / f"session-manager-corpus-{lines}"
    marker = base / "truth.json"
    if marker.exists():
        return base, json.loads(marker.read_text())
    shutil.rmtree(base, ignore_errors=True)
    started = time.perf_counter()
    truth = make_corpus(base, lines)
    days = {day: tokens for day, tokens in sorted(truth.by_day().items())}
    data = {"lines": truth.lines, "bytes": truth.bytes, "responses": len(truth.responses), "by_day": days}
    marker.write_text(json.dumps(data))
    print(f"generated {truth.lines:,} lines ({truth.bytes / 1e6:,.0f} MB) in {time.perf_counter() - started:.0f} s"
          f" under {base}")
    return base, data


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.strip()[:500]}")
    return elapsed, proc.stdout


def tokens_ours(row: dict) -> list[int]:
    return [row["input_tokens"], row["output_tokens"], row["cache_write_tokens"], row["cache_read_tokens"]]


def tokens_ccusage(row: dict) -> list[int]:
    return [row["inputTokens"], row["outputTokens"], row["cacheCreationTokens"], row["cacheReadTokens"]]


def models_ours(rows: list[dict]) -> dict[tuple[str, str], list[int]]:
    return {(row["period"], m["model"]): tokens_ours(m) for row in rows for m in row["models"]}


def models_ccusage(days: list[dict]) -> dict[tuple[str, str], list[int]]:
    return {(row["date"], m["modelName"]): tokens_ccusage(m) for row in days for m in row["modelBreakdowns"]}


def attribution(sessions: int = 50, conversations: int = 200) -> None:
    """Bind, attach every session, and check sessions + unattributed = the corpus's total."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    work = Path(tempfile.mkdtemp(prefix="bench-attribution-"))
    started = time.perf_counter()
    plan = make_attribution_corpus(work / "claude", sessions, conversations)
    print(f"\nattribution corpus: {sessions} sessions, {conversations} conversations, {plan.truth.lines:,} lines,"
          f" {len(plan.truth.responses):,} responses, {len(plan.bindings)} bindings"
          f" ({time.perf_counter() - started:.1f} s to generate)")
    os.environ["CLAUDE_CONFIG_DIR"] = str(work / "claude")
    from datetime import datetime

    from session_manager.service import Service

    project = work / "project"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude/session-manager.toml").write_text("[backup]\nenabled = false\n")
    now = [datetime.now().astimezone()]
    service = Service(project, actor="bench", clock=lambda: now[0])
    timeline: list[tuple[datetime, int, str, object]] = []
    for index, (begin, end) in enumerate(plan.sessions):
        timeline += [(begin, 0, "start", index), (end, 2, "end", index)]
    timeline += [(since, 1, "bind", (index, conversation)) for since, index, conversation in plan.bindings]
    ids: dict[int, str] = {}
    started = time.perf_counter()
    for moment, _order, what, subject in sorted(timeline, key=lambda t: (t[0], t[1])):
        now[0] = moment
        if what == "start":
            ids[subject] = service.start(level="dev").state.session_id  # type: ignore[index]
        elif what == "end":
            service.end(session_id=ids[subject])  # type: ignore[index]
        else:
            index, conversation = subject  # type: ignore[misc]
            service.usage_bind(session_id=ids[index], claude_session=conversation, since=moment)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    service.usage()  # the import, timed apart from the attribution
    imported = time.perf_counter() - started
    started = time.perf_counter()
    for session_id in ids.values():
        service.usage_attach(session_id=session_id)
    attach_all = time.perf_counter() - started
    started = time.perf_counter()
    for session_id in ids.values():
        assert service.usage_attach(session_id=session_id).added_usd == 0.0
    again = time.perf_counter() - started
    started = time.perf_counter()
    unattributed = service.usage(unattributed=True)
    unattributed_seconds = time.perf_counter() - started
    total = service.usage()
    sessions_usd = sum(service.show(session_id=s).state.cost_tracking.total_cost for s in ids.values())
    sessions_tokens = sum(service.show(session_id=s).state.cost_tracking.tokens.output for s in ids.values())
    print(f"  {setup:.2f} s to start, bind and end; import {imported:.2f} s; attach all {len(ids)} sessions"
          f" {attach_all:.2f} s ({attach_all / len(ids) * 1000:.0f} ms each); again with nothing new {again:.2f} s;"
          f" usage --unattributed {unattributed_seconds:.2f} s")
    print(f"  sessions ${sessions_usd:,.4f} + unattributed ${unattributed.totals.cost_usd:,.4f}"
          f" = ${sessions_usd + unattributed.totals.cost_usd:,.4f}; usage total ${total.totals.cost_usd:,.4f}")
    print(f"  output tokens: sessions {sessions_tokens:,} + unattributed {unattributed.totals.output_tokens:,}"
          f" = {sessions_tokens + unattributed.totals.output_tokens:,}; corpus truth {plan.truth.total()[1]:,}")
    same = abs(sessions_usd + unattributed.totals.cost_usd - total.totals.cost_usd) < 1e-4 and \
        sessions_tokens + unattributed.totals.output_tokens == plan.truth.total()[1] == total.totals.output_tokens
    print(f"  sessions + unattributed = corpus total: {same}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, help="where to build (or reuse) the corpus")
    parser.add_argument("--no-ccusage", action="store_true", help="skip ccusage (a smoke run)")
    parser.add_argument("--attribution-only", action="store_true", help="only the attribution check")
    args = parser.parse_args()
    if args.attribution_only:
        attribution()
        return

    base, truth = corpus(args.corpus, args.lines)
    ccusage = None if args.no_ccusage else ensure_ccusage()
    env = {**os.environ, "TZ": "UTC", "CLAUDE_CONFIG_DIR": str(base)}
    ours_cmd = [sys.executable, "-m", "session_manager", "usage", "daily", "--json"]
    results: dict[str, list[float]] = {"ccusage": [], "first": [], "again": []}
    again_bytes, inside, ours_out, cc_out = [], {"first": [], "again": []}, "", ""
    for _ in range(args.runs):
        if ccusage:
            seconds, cc_out = timed([str(ccusage), "claude", "daily", "--json", "--offline"], env, HERE)
            results["ccusage"].append(seconds)
        project = Path(tempfile.mkdtemp(prefix="bench-usage-"))
        (project / ".claude").mkdir()
        seconds, ours_out = timed(ours_cmd, {**env, "CLAUDE_PROJECT_DIR": str(project)}, project)
        results["first"].append(seconds)
        inside["first"].append(json.loads(ours_out)["imported"]["seconds"])
        seconds, again = timed(ours_cmd, {**env, "CLAUDE_PROJECT_DIR": str(project)}, project)
        results["again"].append(seconds)
        again_bytes.append(json.loads(again)["imported"]["bytes_read"])
        inside["again"].append(json.loads(again)["imported"]["seconds"])
        shutil.rmtree(project, ignore_errors=True)

    ours = json.loads(ours_out)
    median = {name: statistics.median(values) for name, values in results.items() if values}
    print(f"\ncorpus: {truth['lines']:,} lines, {truth['bytes'] / 1e6:,.0f} MB, {truth['responses']:,} responses;"
          f" median of {args.runs} runs, whole processes")
    print(f"  session-manager usage daily (first import)   {median['first']:6.2f} s   "
          f"read {ours['imported']['bytes_read'] / 1e6:,.0f} MB, parsed {ours['imported']['lines_parsed']:,} lines")
    print(f"  session-manager usage daily (nothing new)    {median['again']:6.2f} s   "
          f"read {max(again_bytes)} bytes   ({median['again'] / median['first']:.2f} of the first import)")
    first_in, again_in = statistics.median(inside["first"]), statistics.median(inside["again"])
    print(f"  the import alone (in-process, without Python start-up): first {first_in:.3f} s, nothing new"
          f" {again_in:.3f} s ({again_in / first_in:.3f} of the first)")
    if "ccusage" in median:
        print(f"  ccusage {CCUSAGE_VERSION} claude daily --offline          {median['ccusage']:6.2f} s")
        print(f"  ratio first import / ccusage: {median['first'] / median['ccusage']:.2f}"
              f"  (<= 1.00 means no slower than ccusage)")

    ours_days = {row["period"]: tokens_ours(row) for row in ours["rows"]}
    truth_days = {day: tokens for day, tokens in truth["by_day"].items()}
    print(f"\ntotals per day equal the corpus's truth: {ours_days == truth_days}"
          f"  (total {tokens_ours(ours['totals'])})")
    if cc_out:
        cc = json.loads(cc_out)
        cc_days = {row["date"]: tokens_ccusage(row) for row in cc["daily"]}
        print(f"totals per day equal ccusage's:          {ours_days == cc_days}"
              f"  (ccusage total {tokens_ccusage(cc['totals'])})")
        ours_models, cc_models = models_ours(ours["rows"]), models_ccusage(cc["daily"])
        print(f"totals per day and model equal ccusage's: {ours_models == cc_models}"
              f"  ({len(ours_models)} day-model pairs)")
        same = abs(ours["totals"]["cost_usd"] - cc["totals"]["totalCost"]) < 0.01
        print(f"cost: ours ${ours['totals']['cost_usd']:,.2f}, ccusage ${cc['totals']['totalCost']:,.2f}"
              + ("" if same else " (the price tables differ: ccusage uses LiteLLM's)"))
        if ours_days != cc_days:
            for day in sorted(set(ours_days) | set(cc_days)):
                if ours_days.get(day) != cc_days.get(day):
                    print(f"  {day}: ours {ours_days.get(day)} ccusage {cc_days.get(day)}")
    attribution()


if __name__ == "__main__":
    main()
