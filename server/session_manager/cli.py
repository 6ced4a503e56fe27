"""The `session-manager` command: parse arguments, call the service, print the result.

Exit codes: 0 ok; 2 bad input, not found or a refused transition (one `error: ...` line on
stderr, nothing written); 1 an internal fault (traceback in a log file, not on screen);
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from session_manager import __version__
from session_manager.errors import InvalidInput, SessionError
from session_manager.levels import looks_like_session_id

ID_NOTE = "When ID is left out, the most recent active session is meant."
# Modules that add subcommands: each has `register(sub, command)` (see build_parser).
# Keep them light to import: heavy imports go inside their handlers.
COMMAND_MODULES: tuple[str, ...] = ("cli_serve", "cli_hooks", "cli_templates", "cli_backup", "cli_reports")
Handler = Callable[[argparse.Namespace], Any]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise InvalidInput(f"{message} (see `{self.prog} --help`)")


def service(actor: str = "cli") -> Any:
    from session_manager.service import Service

    return Service(actor=os.environ.get("SESSION_MANAGER_ACTOR", actor))


def _emit(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    if getattr(args, "json", False):
        print(result.model_dump_json(indent=2))
    else:
        print(human(result))


def _split_id(words: list[str], minimum: int = 0) -> tuple[str | None, list[str]]:
    """`[ID] REST...`: the first word is the session id when it has the shape of one."""
    if words and len(words) > minimum and looks_like_session_id(words[0]):
        return words[0], words[1:]
    return None, words


def _pairs(items: list[str] | None, what: str, convert: Callable[[str], Any] = str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} must be NAME=VALUE, got {item!r}")
        try:
            result[key.strip()] = convert(value.strip())
        except ValueError:
            raise InvalidInput(f"{what} {key}: {value!r} is not a number") from None
    return result


# -- handlers -----------------------------------------------------------------------
def cmd_start(args: argparse.Namespace) -> None:
    from session_manager import views
    from session_manager.levels import resolve_level

    level = resolve_level(args.level)
    words = list(args.words)
    number = None
    if level.needs_number and words:
        if not words[0].isdigit():
            raise InvalidInput(f"episode number must be a whole number, got {words[0]!r}")
        number = int(words.pop(0))
    topic = args.topic or (" ".join(words) if words else None)
    result = service().start(
        level=level.name, number=number, topic=topic, complexity=args.complexity, tag=args.tag,
        budget_usd=args.budget, objectives=args.objective or None,
    )
    _emit(args, result, lambda r: f"started {r.state.session_id}\n  {r.folder}\n\n" + views.session_detail(r))


def cmd_init(args: argparse.Namespace) -> None:
    args.level, args.words = "production", [str(args.episode)]
    cmd_start(args)


def cmd_status(args: argparse.Namespace) -> None:
    from session_manager import views

    svc = service()
    if args.id:
        _emit(args, svc.show(session_id=args.id), views.session_detail)
    else:
        _emit(args, svc.list_sessions(status="active"),
              lambda r: views.session_list(r, "no active sessions (start one: session-manager start dev)"))


def cmd_show(args: argparse.Namespace) -> None:
    from session_manager import views

    _emit(args, service().show(session_id=args.id), views.session_detail)


def cmd_list(args: argparse.Namespace) -> None:
    from session_manager import views

    result = service().list_sessions(level=args.level, status=args.status, since=args.since, limit=args.limit)
    _emit(args, result, views.session_list)


def cmd_end(args: argparse.Namespace) -> None:
    from session_manager import views

    result = service().end(session_id=args.id, summary=args.summary, abandoned=args.abandon)
    _emit(args, result, views.ended)


def _update(field: str, minimum: int) -> Handler:
    def handler(args: argparse.Namespace) -> None:
        from session_manager import views

        session_id, items = _split_id(args.words, minimum)
        if not items:
            raise InvalidInput("give at least one item after the session id")
        result = service().update(session_id=session_id, **{field: items})
        _emit(args, result, lambda r: views.update_summary(r, field, items))

    return handler


def cmd_stage_start(args: argparse.Namespace) -> None:
    from session_manager import views

    session_id, rest = _split_id(args.words)
    if len(rest) > 1:
        raise InvalidInput("stage start takes [ID] [STAGE]")
    result = service().stage_start(session_id=session_id, stage=rest[0] if rest else None)
    _emit(args, result, views.stage_result)


def _id_and_stage(words: list[str], command: str) -> tuple[str | None, str]:
    session_id, rest = _split_id(words, 1)
    if len(words) == 1 and looks_like_session_id(words[0]):
        raise InvalidInput(f"{command} needs a STAGE after the session id: {command} {words[0]} STAGE")
    if len(rest) != 1:
        raise InvalidInput(f"{command} takes [ID] STAGE, got {len(words)} words")
    return session_id, rest[0]


def cmd_stage_complete(args: argparse.Namespace) -> None:
    from session_manager import views

    session_id, stage = _id_and_stage(args.words, "stage complete")
    result = service().stage_complete(
        session_id=session_id, stage=stage, outputs=_pairs(args.output, "--output") or None,
        quality=_pairs(args.quality, "--quality", float) or None, cost_usd=args.cost, tokens=args.tokens,
        model=args.model, notes=args.notes,
    )
    _emit(args, result, views.stage_result)


def cmd_stage_fail(args: argparse.Namespace) -> None:
    from session_manager import views

    session_id, stage = _id_and_stage(args.words, "stage fail")
    result = service().record_failure(session_id=session_id, stage=stage, error=args.error, retryable=not args.fatal)
    _emit(args, result, views.stage_result)


def _override(kind: str) -> Handler:
    def handler(args: argparse.Namespace) -> None:
        from session_manager import views

        session_id, stage = _id_and_stage(args.words, kind)
        svc = service()
        operation = svc.bypass if kind == "bypass" else svc.skip
        result = operation(session_id=session_id, stage=stage, reason=args.reason)
        _emit(args, result, lambda r: views.stage_result(r, "bypassed" if kind == "bypass" else "skipped"))

    return handler


def cmd_resume(args: argparse.Namespace) -> None:
    from session_manager import views

    result = service().resume(session_id=args.id, from_stage=args.from_stage)
    _emit(args, result, views.stage_result)


def cmd_log(args: argparse.Namespace) -> None:
    import json

    session_id, records, skipped = service().journal(args.id)
    if skipped:
        print(f"warning: {skipped} unreadable line(s) in {session_id}/events.jsonl skipped"
              " (a write cut short by a crash)", file=sys.stderr)
    for record in records[-args.limit:]:
        if args.json:
            print(json.dumps(record))
        else:
            extra = {k: v for k, v in record.items() if k not in ("session_id", "at", "actor", "event")}
            detail = " ".join(f"{k}={v}" for k, v in extra.items() if v not in (None, [], ""))
            print(f"{record['at']}  {record['actor']:<6} {record['event']:<18} {detail}")


# -- parser -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="session-manager",
        description="Durable, resumable sessions for AI-assisted work. " + ID_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"session-manager {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, handler: Handler, help: str, json: bool = True, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help + " " + ID_NOTE, **kw)
        p.set_defaults(handler=handler)
        if json:
            p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
        return p

    p = command("start", cmd_start, "Start a session: start prod 5 --topic CRISPR, start dev \"fix gantt\".")
    p.add_argument("level", metavar="LEVEL", help="dev|1, prod|production|2, platform|plan|3, coded|code|4")
    p.add_argument("words", nargs="*", metavar="ARG", help="production: the episode number, then topic words;"
                   " other levels: topic words")
    _start_options(p)

    p = command("init", cmd_init, "Start a production session (seed spelling of `start prod N`).")
    p.add_argument("--episode", type=int, required=True, help="episode number")
    _start_options(p)

    p = command("status", cmd_status, "Show one session, or every active session across levels.")
    p.add_argument("id", nargs="?", metavar="ID")
    p = command("show", cmd_show, "Show one session in detail.")
    p.add_argument("id", nargs="?", metavar="ID")

    p = command("list", cmd_list, "List sessions, newest first.")
    p.add_argument("--level", help="only this level (any alias)")
    p.add_argument("--status", choices=["active", "initialized", "in_progress", "completed", "failed", "abandoned"])
    p.add_argument("--since", help="only sessions started on or after this date (YYYY-MM-DD)")
    p.add_argument("--limit", type=int)

    p = command("end", cmd_end, "End a session: completed, or abandoned with --abandon.")
    p.add_argument("id", nargs="?", metavar="ID")
    p.add_argument("--summary", help="what the session achieved")
    p.add_argument("--abandon", action="store_true", help="end it as abandoned instead of completed")

    for noun, verbs in {
        "task": {"add": ("add_tasks", "Add tasks: task add [ID] TEXT..."),
                 "done": ("complete_tasks", "Complete tasks by #id or exact text: task done [ID] REF...")},
        "blocker": {"add": ("blockers", "Record blockers: blocker add [ID] TEXT..."),
                    "clear": ("clear_blockers", "Clear blockers by #id or exact text: blocker clear [ID] REF...")},
        "learning": {"add": ("learnings", "Record learnings: learning add [ID] TEXT...")},
        "decision": {"add": ("decisions", "Record decisions: decision add [ID] TEXT...")},
    }.items():
        group = sub.add_parser(noun, help=f"{noun}s of a session ({', '.join(verbs)})")
        verbs_sub = group.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
        for verb, (field, text) in verbs.items():
            p = verbs_sub.add_parser(verb, help=text, description=text + " " + ID_NOTE)
            p.set_defaults(handler=_update(field, 1))
            p.add_argument("words", nargs="+", metavar="[ID] TEXT")
            p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")

    stage = sub.add_parser("stage", help="pipeline stages (start, complete, fail, skip)")
    stage_sub = stage.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)

    def stage_command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = stage_sub.add_parser(name, help=help, description=help + " " + ID_NOTE)
        p.set_defaults(handler=handler)
        p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
        return p

    p = stage_command("start", cmd_stage_start, "Start a stage (the next one when none is named): stage start [ID] [STAGE].")
    p.add_argument("words", nargs="*", metavar="[ID] [STAGE]")
    p = stage_command("complete", cmd_stage_complete, "Complete a stage, evaluate its gate, hand over: stage complete [ID] STAGE.")
    p.add_argument("words", nargs="+", metavar="[ID] STAGE")
    p.add_argument("--quality", action="append", metavar="METRIC=SCORE", help="a score 0..1 (repeat); overall=... sets the overall score")
    p.add_argument("--output", action="append", metavar="NAME=VALUE", help="an output handed to the next stage (repeat)")
    p.add_argument("--cost", type=float, metavar="USD", help="what the stage cost in USD")
    p.add_argument("--tokens", type=int, help="tokens the stage used")
    p.add_argument("--model", help="the model that ran the stage")
    p.add_argument("--notes", help="free text kept in the stage record")
    p = stage_command("fail", cmd_stage_fail, "Record a failure of a stage: retry, or escalate after the last attempt.")
    p.add_argument("words", nargs="+", metavar="[ID] STAGE")
    p.add_argument("--error", required=True, help="what went wrong")
    p.add_argument("--fatal", action="store_true", help="not retryable: escalate at once")
    p = stage_command("skip", _override("skip"), "Skip a stage that is not needed (logged).")
    p.add_argument("words", nargs="+", metavar="[ID] STAGE")
    p.add_argument("--reason", default="not needed", help="why it is skipped")

    p = command("bypass", _override("bypass"), "Bypass a stage's gate or failure: a logged override with a reason.")
    p.add_argument("words", nargs="+", metavar="[ID] STAGE")
    p.add_argument("--reason", required=True, help="why (kept in the events and the status)")

    p = command("resume", cmd_resume, "Resume a failed or interrupted session, at the failure point or --from a completed stage.")
    p.add_argument("id", nargs="?", metavar="ID")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="re-open this completed stage and the ones after it")

    p = command("log", cmd_log, "Show the session's journal (events.jsonl).")
    p.add_argument("id", nargs="?", metavar="ID")
    p.add_argument("--limit", type=int, default=50, help="last N events (default 50)")

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"session_manager.{name}").register(sub, command)
    return parser


def _start_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", help="what the session is about")
    p.add_argument("--complexity", type=int, help="1 (simple) to 10")
    p.add_argument("--tag", help="replaces the time in the id, e.g. test -> ep_001_20261121_test")
    p.add_argument("--budget", type=float, metavar="USD", help="budget for the session (production default $5)")
    p.add_argument("--objective", action="append", metavar="TEXT", help="an objective (repeat)")


def _log_internal_error() -> Path:
    path = Path(tempfile.gettempdir()) / "session-manager-errors.log"
    with path.open("a") as handle:
        handle.write(f"--- session-manager {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not getattr(args, "handler", None):
            build_parser().print_help()
            return 2
        args.handler(args)
        return 0
    except SessionError as exc:
        # the same message the MCP tools return, word for word (field names as the tools name them)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # our fault: one line for the user, the traceback in a log
        log = _log_internal_error()
        print(f"error: internal error ({type(exc).__name__}: {exc}); details in {log}", file=sys.stderr)
        return 1
