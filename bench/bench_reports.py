"""Report speed over 10,000 sessions: cold (no summary cache) and warm, in fresh processes,
with peak memory (max RSS of the process), plus the end-to-end CLI `report month --json`.

    .venv/bin/python bench/bench_reports.py [--sessions 10000] [--keep DIR] [--baseline REV]

The sessions are production episodes written straight to disk (through the pydantic models
the tool itself uses), each with nine stages, costs per stage, quality scores, some retries,
errors, bypasses and alerts, spread over the last 60 days. Budget from the design: a report
under 1 s, peak memory under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from session_manager.config import DEFAULT_PIPELINES
from session_manager.model import (
    Alert,
    Budget,
    CostTracking,
    CreatedBy,
    ErrorRecord,
    Metadata,
    SessionState,
    SessionStatus,
    StageState,
    StageStatus,
    dump_json,
)

ERRORS = ["ElevenLabs timeout after {n}s on /tmp/ep{e}/part{p}.mp3", "HTTP 503 from perplexity (request {h})",
          "script too long: {n} words over the limit", "KeyError: 'outline' in ep_{e:03d}_20261101_0930"]


def make_sessions(root: Path, count: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    folder = root / ".claude" / "level-2-production" / "sessions"
    folder.mkdir(parents=True)
    stages = [s.name for s in DEFAULT_PIPELINES["production"]]
    for i in range(count):
        started = now - timedelta(days=rng.uniform(0, 60))
        session_id = f"ep_{i + 1:04d}_{started:%Y%m%d}_{started:%H%M}"
        done = rng.choice([9] * 6 + [rng.randrange(9)] * 4)
        state = SessionState(session_id=session_id, level="production", episode_number=i + 1, started_at=started,
                             last_updated=started, budget=Budget(usd=5.0))
        moment, costs = started, CostTracking()
        for index, name in enumerate(stages):
            stage = StageState()
            if index < done:
                seconds = rng.uniform(120, 1800)
                stage.status = StageStatus.completed if rng.random() > 0.03 else StageStatus.bypassed
                stage.attempts = stage.total_attempts = rng.choice([1, 1, 1, 2])
                stage.started_at, stage.completed_at = moment, moment + timedelta(seconds=seconds)
                stage.execution_seconds = round(seconds, 1)
                stage.gate_failures = stage.attempts - 1
                stage.override_reason = "manual check" if stage.status == StageStatus.bypassed else None
                moment += timedelta(seconds=seconds)
                usd = round(rng.uniform(0.05, 0.9), 4)
                costs.cost_by_stage[name] = usd
                costs.total_cost = round(costs.total_cost + usd, 6)
            elif index == done:
                stage.status = rng.choice([StageStatus.in_progress, StageStatus.escalated, StageStatus.retrying])
                stage.attempts = stage.total_attempts = 1
                stage.started_at = moment
            state.stages[name] = stage
        state.cost_tracking = costs
        state.quality_metrics = {m: round(rng.uniform(0.7, 0.98), 3) for m in
                                 ("comprehension", "brand_consistency", "engagement", "technical_accuracy")}
        state.quality_overall = round(statistics.fmean(state.quality_metrics.values()), 4)
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            text = rng.choice(ERRORS).format(n=rng.randint(10, 99), e=i, p=rng.randint(1, 9), h=f"{rng.getrandbits(40):x}")
            state.errors.append(ErrorRecord(stage=rng.choice(stages), error=text, at=started, attempt=1, retryable=True,
                                            decision="retry"))
        state.error_count = len(state.errors)
        if done == 9:
            state.status = SessionStatus.completed
            state.completed_at = state.ended_at = moment
        else:
            state.status = SessionStatus.failed if state.stages[stages[done]].status == StageStatus.escalated \
                else SessionStatus.in_progress
        state.last_updated = moment
        if costs.total_cost >= 4.0:
            state.alerts.append(Alert(kind="cost", severity="warning", message="cost near budget",
                                      value=costs.total_cost / 5, threshold=0.8, raised_at=moment))
        state.stages_completed = [n for n, s in state.stages.items() if s.status == StageStatus.completed]
        state.current_stage = stages[done] if done < 9 else None
        target = folder / session_id
        target.mkdir()
        (target / "pipeline_status.json").write_text(dump_json(state))
        metadata = Metadata(session_id=session_id, level="production", episode_number=i + 1, topic=f"episode {i}",
                            budget_usd=5.0, created_at=started, created_by=CreatedBy(actor="bench"))
        (target / "metadata.json").write_text(dump_json(metadata))


CHILD = """
import hashlib, resource, sys, time
from datetime import datetime
from pathlib import Path
from session_manager.service import Service
now = datetime.fromisoformat(sys.argv[2])
service = Service(Path(sys.argv[1]), clock=lambda: now)
t, c = time.perf_counter(), time.process_time()
report = service.report(period="month")
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
digest = hashlib.sha256(report.model_dump_json().encode()).hexdigest()[:16]
print(f"{elapsed:.4f} {peak:.1f} {report.sessions.run} {report.cost.total_usd:.2f} {cpu:.4f} {digest}")
"""

Run = tuple[float, float, int, str, float, str]
NOW = datetime.now(UTC).replace(microsecond=0).isoformat()  # one clock for every run: the same window, the same JSON


def run_child(root: Path, code: Path | None = None) -> Run:
    """(seconds of Service.report in a fresh process, imports excluded; the process's peak RSS in MB;
    sessions in the report; its total cost; the CPU seconds it took, which a loaded machine
    disturbs far less than the wall clock; a digest of the report's JSON, every run at the same
    clock). `code`: run that copy of `server/` instead of ours."""
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), NOW], capture_output=True, text=True, check=True,
                         env=env).stdout
    seconds, peak, run, total, cpu, digest = out.split()
    return float(seconds), float(peak), int(run), total, float(cpu), digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the sessions in this folder")
    parser.add_argument("--baseline", metavar="REV", help="also run the report code of this git revision,"
                        " interleaved with ours on the same sessions (the fair comparison on a busy machine)")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-reports-"))
    root = base / "project"
    if not (root / ".claude").is_dir():
        started = time.perf_counter()
        make_sessions(root, args.sessions)
        print(f"generated {args.sessions} sessions in {time.perf_counter() - started:.1f} s under {root}")
    cache = root / ".claude" / ".session-manager" / "report-cache.sqlite"

    baseline: Path | None = None
    if args.baseline:
        baseline = base / f"baseline-{args.baseline}"
        baseline.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "archive", args.baseline, "server"], cwd=Path(__file__).resolve().parent.parent,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        baseline = baseline / "server"

    def drop_cache() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{cache}{suffix}").unlink(missing_ok=True)

    cold, cold_before = [], []
    for _ in range(args.runs):  # interleaved with the baseline's, when there is one
        drop_cache()
        cold.append(run_child(root))
        if baseline:
            drop_cache()
            cold_before.append(run_child(root, baseline))
    warm_before = []
    if baseline:  # each version keeps its own cache layout: fill it once, then measure
        run_child(root, baseline)
        warm_before = [run_child(root, baseline) for _ in range(args.runs)]
    run_child(root)
    warm = [run_child(root) for _ in range(args.runs)]
    cli = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "session_manager", "report", "month", "--json"], cwd=root,
                       capture_output=True, check=True)
        cli.append(time.perf_counter() - started)

    def line(name: str, runs: list[Run]) -> str:
        seconds, cpu = statistics.median(r[0] for r in runs), statistics.median(r[4] for r in runs)
        return (f"{name:<34} {seconds:7.3f} s (CPU {cpu:.3f} s)   peak {max(r[1] for r in runs):6.1f} MB   "
                f"({runs[0][2]} sessions in the month, ${runs[0][3]})")

    print(f"\nreport month over {args.sessions} sessions, median of {args.runs} runs (budget: < 1 s, < 300 MB;"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    print(line("cold: no summary cache", cold))
    print(line("warm: summary cache", warm))
    if baseline:
        print(line(f"cold, {args.baseline}", cold_before))
        print(line(f"warm, {args.baseline}", warm_before))
        print(f"ours / {args.baseline}: cold {statistics.median(r[0] for r in cold) / statistics.median(r[0] for r in cold_before):.2f}x,"
              f" warm {statistics.median(r[0] for r in warm) / statistics.median(r[0] for r in warm_before):.2f}x")
    digests = {r[5] for r in cold + warm}
    print(f"report JSON: {'the same in every run' if len(digests) == 1 else 'DIFFERENT: ' + ', '.join(sorted(digests))}"
          f" ({len(cold + warm)} runs, cold and warm)")
    if baseline:
        theirs = {r[5] for r in cold_before + warm_before}
        print(f"{args.baseline}'s report JSON: " + ("the same as ours" if theirs == digests else
              f"{', '.join(sorted(theirs))}, not ours (a fix since changed a figure; compare the two --json outputs)"))
    print(f"{'CLI `report month --json` (warm)':<34} {statistics.median(cli):7.3f} s   (whole process, imports included)")
    print(f"cache file: {cache.stat().st_size / 1e6:.1f} MB")
    print(json.dumps({"sessions": args.sessions, "cold_s": statistics.median(r[0] for r in cold),
                      "warm_s": statistics.median(r[0] for r in warm), "cli_s": statistics.median(cli),
                      "cold_cpu_s": statistics.median(r[4] for r in cold),
                      "warm_cpu_s": statistics.median(r[4] for r in warm), "load": os.getloadavg()[0],
                      "peak_mb": max(r[1] for r in cold + warm), "same_json": len(digests) == 1}))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    main()
