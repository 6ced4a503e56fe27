"""The issue's scenarios end to end through the CLI, as a user would script them."""

from __future__ import annotations

import json
from pathlib import Path

STAGES = ["01_deep_research", "02_questions", "03_synthesis", "04_quality_claude", "05_quality_gemini",
          "06_feedback_synthesis", "07_script_polish", "08_final_review", "09_audio_synthesis"]
RECORD_FIELDS = {"agent_id", "status", "completed_at", "execution_time", "input_hash", "output_quality",
                 "handoff_data", "cost_data", "notes"}


def ok(result):
    assert result.code == 0, result
    return result.json() if result.out.lstrip().startswith("{") else result.out


def test_production_episode_through_all_nine_stages(project: Path, cli) -> None:
    sid = ok(cli("start", "prod", "5", "--topic", "CRISPR", "--json"))["state"]["session_id"]
    folder = project / ".claude/level-2-production/sessions" / sid
    for stage in STAGES[:3]:
        ok(cli("stage", "start", sid, "--json"))
        done = ok(cli("stage", "complete", sid, stage, "--output", "script=out/script.md", "--cost", "0.5",
                      "--tokens", "1000", "--model", "claude-sonnet-4-5", "--json"))
        assert done["decision"] == "advanced"

    ok(cli("stage", "start", sid, "04_quality_claude"))
    retry = ok(cli("stage", "complete", sid, "04_quality_claude", "--quality", "comprehension=0.80",
                   "--quality", "engagement=0.80", "--json"))
    assert retry["decision"] == "retry" and retry["feedback"] == ["overall: 0.80 below 0.85"]
    passed = ok(cli("stage", "complete", sid, "04_quality_claude", "--quality", "comprehension=0.87",
                    "--quality", "engagement=0.91", "--json"))
    assert passed["decision"] == "advanced" and passed["next_stage"] == "05_quality_gemini"

    decisions = [ok(cli("stage", "fail", sid, "05_quality_gemini", "--error", f"gemini 503 try {n}",
                        "--json"))["decision"] for n in (1, 2, 3)]
    assert decisions == ["retry", "retry", "escalated"]
    assert ok(cli("status", sid, "--json"))["sessions"][0]["state"]["status"] == "failed"
    human = cli("status", sid).out
    assert "failed" in human and "escalated" in human

    resumed = ok(cli("resume", sid, "--json"))
    assert resumed["decision"] == "resumed" and resumed["stage"] == "05_quality_gemini"
    state = ok(cli("status", sid, "--json"))["sessions"][0]["state"]
    assert state["status"] == "in_progress" and state["recovery_count"] == 1
    assert state["current_stage"] == "05_quality_gemini"

    for stage in STAGES[4:]:
        ok(cli("stage", "start", sid))
        last = ok(cli("stage", "complete", sid, stage, "--quality", "overall=0.9", "--json"))
    assert last["decision"] == "completed"
    state = ok(cli("status", sid, "--json"))["sessions"][0]["state"]
    assert state["status"] == "completed" and state["progress"]["percent"] == 100.0
    assert state["stages_completed"] == STAGES and state["stages_remaining"] == []
    assert state["error_count"] == 3 and state["cost_tracking"]["total_cost"] == 1.5
    assert state["cost_tracking"]["cost_by_stage"] == {s: 0.5 for s in STAGES[:3]}

    for stage in STAGES:
        record = json.loads((folder / f"{stage}_complete.json").read_text())
        assert RECORD_FIELDS <= record.keys(), stage
        assert {"next_agent", "required_inputs", "validation_passed"} <= record["handoff_data"].keys()
        assert {"tokens_used", "estimated_cost", "model_used"} <= record["cost_data"].keys()
        assert "overall_score" in record["output_quality"]
    assert len(list((folder / "quality_reports").iterdir())) == 7  # 04 twice, 05..09 once each (03 had none)

    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    transitions = [(e["stage"], e["new"]) for e in events if e["event"] == "stage_status"]
    gemini = [new for stage, new in transitions if stage == "05_quality_gemini"]
    assert gemini == ["in_progress", "failed", "retrying", "in_progress", "failed", "retrying", "in_progress",
                      "failed", "escalated", "retrying", "in_progress", "completed"]
    sessions = [e["new"] for e in events if e["event"] == "session_status"]
    assert sessions == ["in_progress", "failed", "in_progress", "completed"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_refusals_through_the_cli_write_nothing(project: Path, cli) -> None:
    from conftest import tree_snapshot

    sid = ok(cli("start", "prod", "5", "--json"))["state"]["session_id"]
    before = tree_snapshot(project / ".claude")
    never = cli("stage", "complete", sid, "01_deep_research")
    assert never.code == 2 and "never started" in never.err and "stage start" in never.err
    early = cli("stage", "start", sid, "03_synthesis")
    assert early.code == 2 and "earlier stage 01_deep_research is pending" in early.err
    bad = cli("stage", "complete", sid, "01_deep_research", "--quality", "overall=high")
    assert bad.code == 2 and "valid number" in bad.err
    assert tree_snapshot(project / ".claude") == before


def test_quality_gate_routes_back_through_the_cli(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text(
        '[[pipelines.production]]\nname = "draft"\n'
        '[[pipelines.production]]\nname = "check"\non_quality_fail = "draft"\n'
        'quality_gate = { overall = 0.85 }\n'
    )
    sid = ok(cli("start", "prod", "9", "--json"))["state"]["session_id"]
    ok(cli("stage", "start", sid))
    ok(cli("stage", "complete", sid, "draft"))
    ok(cli("stage", "start", sid))
    routed = ok(cli("stage", "complete", sid, "check", "--quality", "overall=0.6", "--json"))
    assert routed["decision"] == "routed_back" and routed["routed_to"] == "draft"
    assert "started draft" in cli("stage", "start", sid).out
    state = ok(cli("status", sid, "--json"))["sessions"][0]["state"]
    assert state["stages"]["draft"]["feedback"] == "from check: overall: 0.60 below 0.85"


def test_dev_session_runs_its_five_stage_lifecycle(cli) -> None:
    sid = ok(cli("start", "dev", "fix gantt", "--json"))["state"]["session_id"]
    stages = ["initialization", "planning", "execution", "validation", "review"]
    for stage in stages:
        started = ok(cli("stage", "start", "--json"))
        assert started["stage"] == stage
        result = ok(cli("stage", "complete", stage, "--json"))
    assert result["decision"] == "completed"
    state = ok(cli("status", sid, "--json"))["sessions"][0]["state"]
    assert state["status"] == "completed" and state["stages_completed"] == stages
    ended = cli("end", sid, "--summary", "gantt fixed", "--json")
    assert ended.code == 0 and ended.json()["state"]["summary"] == "gantt fixed"


def test_bypass_via_cli_is_visible_in_status(cli) -> None:
    sid = ok(cli("start", "coded", "--json"))["state"]["session_id"]
    ok(cli("bypass", sid, "implement", "--reason", "override for debugging"))
    out = cli("status", sid).out
    assert "bypassed" in out and "override for debugging" in out
    log = cli("log", sid).out
    assert "stage_bypassed" in log
