"""A generator of Claude Code transcript corpora, shaped like the files Claude Code writes
(`projects/<project>/<session>.jsonl` and `<session>/subagents/agent-*.jsonl`), with the
true de-duplicated totals computed alongside so importers can be checked against them.

What makes it realistic: one API response is written on several lines (one per content block,
same `message.id` and `requestId`; older versions streamed smaller `output_tokens` on the
early lines), resumed sessions replay earlier lines into a new file, subagents write their own
files, tool results are large user lines, API-error lines carry `<synthetic>` usage, and
Task tool results carry a `usage` object on a user line (which must not be counted).

Used by bench/bench_usage.py (400,000 lines) and by tests/test_usage.py (small corpora).
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

MODELS = ["claude-sonnet-4-5-20250929"] * 6 + ["claude-opus-4-5-20251101"] * 2 + ["claude-haiku-4-5-20251001"] * 2
WORDS = ("the pipeline stage quality gate session cost budget review script research episode synthesis "
         "audio polish feedback handoff error retry resume backup commit report token cache model").split()


@dataclass
class Truth:
    """De-duplicated totals: per local day and model, and per Claude Code session."""

    responses: dict[str, tuple[str, str, str, list[int]]] = field(default_factory=dict)  # key -> (day, model, session, tokens)
    lines: int = 0
    bytes: int = 0

    def add(self, key: str, day: str, model: str, session: str, tokens: list[int]) -> None:
        old = self.responses.get(key)
        if old is None or sum(tokens) > sum(old[3]):
            self.responses[key] = (old[0] if old else day, model, old[2] if old else session, tokens)

    def by_day_model(self) -> dict[tuple[str, str], list[int]]:
        totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for day, model, _session, tokens in self.responses.values():
            row = totals[(day, model)]
            for i in range(4):
                row[i] += tokens[i]
        return dict(totals)

    def by_day(self) -> dict[str, list[int]]:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for (day, _model), tokens in self.by_day_model().items():
            for i in range(4):
                totals[day][i] += tokens[i]
        return dict(totals)

    def total(self) -> list[int]:
        out = [0, 0, 0, 0]
        for tokens in self.by_day().values():
            for i in range(4):
                out[i] += tokens[i]
        return out


def _text(rng: random.Random, size: int) -> str:
    words = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Writer:
    def __init__(self, rng: random.Random, truth: Truth, cwd: str, session: str, sidechain: bool) -> None:
        self.rng, self.truth, self.cwd, self.session, self.sidechain = rng, truth, cwd, session, sidechain
        self.lines: list[str] = []
        self.parent: str | None = None

    def base(self, kind: str, moment: datetime) -> dict:
        line_uuid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        record = {"parentUuid": self.parent, "isSidechain": self.sidechain, "userType": "external", "cwd": self.cwd,
                  "sessionId": self.session, "version": "2.0.31", "gitBranch": "main", "type": kind,
                  "uuid": line_uuid, "timestamp": _iso(moment)}
        self.parent = line_uuid
        return record

    def emit(self, record: dict) -> None:
        self.lines.append(json.dumps(record, separators=(",", ":")))

    def user(self, moment: datetime, size: int, task_usage: bool = False) -> None:
        record = self.base("user", moment)
        tool_id = "toolu_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]
        record["message"] = {"role": "user", "content": [
            {"tool_use_id": tool_id, "type": "tool_result", "content": _text(self.rng, size)}]}
        if task_usage:  # a Task tool result: a usage object on a *user* line, never counted
            record["toolUseResult"] = {"status": "completed", "totalTokens": 5000, "usage": {
                "input_tokens": 1000, "output_tokens": 4000, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}}
        self.emit(record)

    def response(self, moment: datetime, model: str, blocks: int, streamed: bool) -> tuple[str, str]:
        rng = self.rng
        msg_id = "msg_01" + uuid.UUID(int=rng.getrandbits(128)).hex[:22]
        req_id = "req_011C" + uuid.UUID(int=rng.getrandbits(128)).hex[:20]
        tokens = [rng.randint(1, 40), rng.randint(20, 3000), rng.choice([0, 0, rng.randint(100, 30000)]),
                  rng.randint(0, 120000)]
        for index in range(blocks):
            last = index == blocks - 1
            output = tokens[1] if (last or not streamed) else rng.randint(1, tokens[1])
            usage = {"input_tokens": tokens[0], "cache_creation_input_tokens": tokens[2],
                     "cache_read_input_tokens": tokens[3],
                     "cache_creation": {"ephemeral_5m_input_tokens": tokens[2], "ephemeral_1h_input_tokens": 0},
                     "output_tokens": output, "service_tier": "standard"}
            block = ({"type": "text", "text": _text(rng, rng.randint(80, 900))} if index % 2 == 0 else
                     {"type": "tool_use", "id": "toolu_" + uuid.UUID(int=rng.getrandbits(128)).hex[:24],
                      "name": "Read", "input": {"file_path": f"{self.cwd}/src/module_{rng.randint(1, 99)}.py"}})
            record = self.base("assistant", moment)
            record["message"] = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                 "content": [block], "stop_reason": None, "stop_sequence": None, "usage": usage}
            record["requestId"] = req_id
            order = ["parentUuid", "isSidechain", "userType", "cwd", "sessionId", "version", "gitBranch",
                     "message", "requestId", "type", "uuid", "timestamp"]
            self.emit({k: record[k] for k in order})
            self.truth.lines += 1
            day = moment.astimezone().strftime("%Y-%m-%d")
            self.truth.add(f"{msg_id}:{req_id}", day, model, self.session,
                           [tokens[0], output, tokens[2], tokens[3]])
        return msg_id, req_id

    def api_error(self, moment: datetime) -> None:
        record = self.base("assistant", moment)
        record["message"] = {"id": "msg_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24], "type": "message",
                             "role": "assistant", "model": "<synthetic>",
                             "content": [{"type": "text", "text": "API Error: 529 overloaded_error"}],
                             "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                       "cache_read_input_tokens": 0}}
        record["isApiErrorMessage"] = True
        self.emit(record)

    def summary(self) -> None:
        self.emit({"type": "summary", "summary": _text(self.rng, 60), "leafUuid": self.parent})


def make_corpus(root: Path, lines: int, seed: int = 7, start: datetime | None = None, days: int = 30,
                projects: int = 8) -> Truth:
    """Write about `lines` transcript lines under `root/projects/` and return the true totals."""
    rng = random.Random(seed)
    truth = Truth()
    start = start or datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    project_paths = [f"/home/dev/work/project-{i}" for i in range(projects)]
    written = 0
    files: list[tuple[Path, list[str]]] = []
    previous: list[tuple[str, list[str]]] = []
    while written < lines:
        cwd = rng.choice(project_paths)
        folder = root / "projects" / cwd.replace("/", "-")
        session = str(uuid.UUID(int=rng.getrandbits(128)))
        moment = start + timedelta(days=rng.randrange(days), minutes=rng.randrange(600))
        writer = _Writer(rng, truth, cwd, session, sidechain=False)
        if previous and rng.random() < 0.15:  # a resumed session replays an earlier one's lines
            _old_cwd, old_lines = rng.choice(previous)
            writer.lines.extend(old_lines[: rng.randint(1, len(old_lines))])
        turns = rng.randint(20, 160)
        model = rng.choice(MODELS)
        for _ in range(turns):
            moment += timedelta(seconds=rng.randint(5, 120))
            writer.user(moment, rng.randint(100, 2500), task_usage=rng.random() < 0.02)
            if rng.random() < 0.01:
                writer.api_error(moment)
            writer.response(moment, model if rng.random() < 0.9 else rng.choice(MODELS), rng.randint(1, 3),
                            streamed=rng.random() < 0.2)
        writer.summary()
        files.append((folder / f"{session}.jsonl", writer.lines))
        previous.append((cwd, writer.lines))
        written += len(writer.lines)
        if rng.random() < 0.3:  # a subagent of this session
            agent = _Writer(rng, truth, cwd, session, sidechain=True)
            for _ in range(rng.randint(5, 40)):
                moment += timedelta(seconds=rng.randint(2, 30))
                agent.user(moment, rng.randint(100, 1500))
                agent.response(moment, "claude-haiku-4-5-20251001" if rng.random() < 0.5 else model,
                               rng.randint(1, 2), streamed=False)
            files.append((folder / session / "subagents" / f"agent-{rng.getrandbits(32):08x}.jsonl", agent.lines))
            written += len(agent.lines)
    for path, file_lines in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "\n".join(file_lines) + "\n"
        path.write_text(data)
        truth.bytes += len(data)
    truth.lines = written
    return truth


@dataclass
class AttributionPlan:
    """Sessions (start, end), conversations bound to them from a time (some to two sessions:
    resumed into another one), and the corpus's true token total."""

    sessions: list[tuple[datetime, datetime]] = field(default_factory=list)
    bindings: list[tuple[datetime, int, str]] = field(default_factory=list)  # (since, session index, conversation)
    conversations: list[str] = field(default_factory=list)
    truth: Truth = field(default_factory=Truth)


def make_attribution_corpus(root: Path, sessions: int = 50, conversations: int = 200, seed: int = 11,
                            start: datetime | None = None, days: int = 5) -> AttributionPlan:
    """One project's transcripts for `conversations` conversations over `days` days, and a plan
    of `sessions` overlapping sessions with the conversations bound to them: most conversations
    bound once (some after their first responses), a quarter resumed into a second session
    later, and about one in ten never bound. Responses outside a bound session's window stay
    unattributed."""
    rng = random.Random(seed)
    start = start or datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    plan = AttributionPlan()
    for _ in range(sessions):
        begin = start + timedelta(minutes=rng.randrange(days * 24 * 60 - 600))
        plan.sessions.append((begin, begin + timedelta(minutes=rng.randint(60, 480))))
    cwd = "/home/dev/work/attributed"
    folder = root / "projects" / cwd.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(conversations):
        conversation = str(uuid.UUID(int=rng.getrandbits(128)))
        plan.conversations.append(conversation)
        index = rng.randrange(sessions)
        begin, end = plan.sessions[index]
        moment = begin + timedelta(minutes=rng.randint(-30, 60))  # sometimes before the session starts
        if rng.random() >= 0.1:
            plan.bindings.append((max(begin, moment - timedelta(minutes=rng.choice([0, 0, 10]))), index, conversation))
            if rng.random() < 0.25:  # resumed into another session that is open at some later time
                later = [i for i, (b, e) in enumerate(plan.sessions) if i != index and e > moment]
                if later:
                    other = rng.choice(later)
                    since = max(plan.sessions[other][0], moment + timedelta(minutes=rng.randint(10, 90)))
                    plan.bindings.append((since, other, conversation))
        writer = _Writer(rng, plan.truth, cwd, conversation, sidechain=False)
        for _turn in range(rng.randint(10, 60)):
            moment += timedelta(seconds=rng.randint(20, 400))
            writer.user(moment, rng.randint(100, 800))
            writer.response(moment, rng.choice(MODELS), rng.randint(1, 2), streamed=rng.random() < 0.2)
        data = "\n".join(writer.lines) + "\n"
        (folder / f"{conversation}.jsonl").write_text(data)
        plan.truth.bytes += len(data)
        plan.truth.lines += len(writer.lines)
    plan.bindings.sort()
    return plan
