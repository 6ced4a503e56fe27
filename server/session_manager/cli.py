"""The `session-manager` command, generated from the operation registry (`operations.py`).

The words of the command line name one registry entry (`stage complete`, `usage attach`); only
that entry's parser is built, from its request model: positional words by the entry's grammar,
every other field as a `--flag`. The arguments are validated by the same request model the MCP
tools use, so both surfaces refuse bad input with the same text.

Exit codes: 0 ok (a change that was saved, even when a later step such as re-rendering the
markdown or the backup failed: that is a `warning:` line on stderr); 2 bad input, not found or a
refused transition (one `error: ...` line on stderr, nothing written); 1 an internal fault
(traceback in a log file, not on screen); 130 interrupted.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from session_manager import __version__, operations
from session_manager.errors import InvalidInput, SessionError
from session_manager.levels import looks_like_session_id
from session_manager.operations import Cli, Operation
from session_manager.textsafe import terminal_safe

PROG = "session-manager"
ID_NOTE = "When ID is left out, the most recent active session is meant."


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise InvalidInput(f"{message} (see `{self.prog} --help`)")


# -- the positional grammar -----------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    field: str
    kind: str  # "id", "one", "optional", "list", "text"
    label: str | None = None  # what help calls it (`add_tasks...:TEXT`); the field's name in capitals otherwise

    @property
    def metavar(self) -> str:
        name = "ID" if self.kind == "id" else (self.label or self.field.upper())
        return {"id": "[ID]", "one": name, "optional": f"[{name}]", "list": f"{name}...",
                "text": f"[{name}...]"}[self.kind]


def words_of(cli: Cli) -> list[Word]:
    out = []
    for spelled in cli.args.split():
        token, _, label = spelled.partition(":")
        if token == "ID?":
            out.append(Word("session_id", "id"))
        elif token.endswith("..."):
            out.append(Word(token[:-3], "list", label or None))
        elif token.endswith("*"):
            out.append(Word(token[:-1], "text", label or None))
        elif token.endswith("?"):
            out.append(Word(token[:-1], "optional", label or None))
        else:
            out.append(Word(token, "one", label or None))
    return out


def bind_words(cli: Cli, grammar: list[Word], words: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    """The request fields that the positional `words` stand for, by the entry's grammar."""
    out: dict[str, Any] = {}
    rest = list(words)
    usage = " ".join(w.metavar for w in grammar) or "no words"
    for index, word in enumerate(grammar):
        needed = sum(1 for w in grammar[index + 1:] if w.kind in ("one", "list"))
        if word.kind == "id":
            alone = index == len(grammar) - 1  # nothing else could take the word: it is meant as an id
            if rest and (alone or (looks_like_session_id(rest[0]) and len(rest) > needed)):
                out["session_id"] = rest.pop(0)
            elif rest and looks_like_session_id(rest[0]) and needed:
                missing = next(w for w in grammar[index + 1:] if w.kind in ("one", "list"))
                raise InvalidInput(f"{cli.path} needs {missing.metavar} after the session id:"
                                   f" {cli.path} {rest[0]} {missing.metavar}")
        elif word.kind == "one":
            if not rest:
                raise InvalidInput(f"{cli.path} needs {word.metavar}: {cli.path} {usage}")
            out[word.field] = rest.pop(0)
        elif word.kind == "optional":
            if rest and not (_is_int(fields[word.field]) and not rest[0].isdigit()):
                out[word.field] = rest.pop(0)
        elif word.kind == "list":
            if not rest:
                raise InvalidInput(f"{cli.path} needs at least one {word.metavar.rstrip('.')}: {cli.path} {usage}")
            out[word.field], rest = rest, []
        elif rest:  # text: the remaining words
            out[word.field], rest = " ".join(rest), []
    if rest:
        raise InvalidInput(f"{cli.path} takes {usage}; unexpected {' '.join(rest)!r}")
    return out


# -- field types ------------------------------------------------------------------------------
def _unwrap(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` down to X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _is_int(info: Any) -> bool:
    return _unwrap(info.annotation) is int


def _add_flag(parser: argparse.ArgumentParser, name: str, info: Any, cli: Cli) -> None:
    flag = cli.flags.get(name, name.replace("_", "-"))
    negated = flag.startswith("!")
    flag = "--" + flag.lstrip("!")
    kind = _unwrap(info.annotation)
    origin = typing.get_origin(kind)
    help_text = info.description or ""
    required = name in cli.required
    if kind is bool:
        parser.add_argument(flag, dest=name, action="store_false" if negated else "store_true",
                            default=None, help=help_text)
    elif origin is list:
        parser.add_argument(flag, dest=name, action="append", metavar="TEXT", help=help_text + " (repeat)")
    elif origin is dict:
        parser.add_argument(flag, dest=name, action="append", metavar="NAME=VALUE", help=help_text + " (repeat)")
    elif origin is typing.Literal:
        parser.add_argument(flag, dest=name, choices=[str(c) for c in typing.get_args(kind)], help=help_text,
                            required=required)
    else:
        metavar = {int: "N", float: "X"}.get(kind, name.split("_")[-1].upper())
        parser.add_argument(flag, dest=name, metavar=metavar, help=help_text, required=required)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--{flag} must be NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# -- one entry's parser ---------------------------------------------------------------------------
def build_parser(op: Operation, cli: Cli) -> Parser:
    grammar = words_of(cli)
    fields = op.request_model().model_fields
    description = cli.summary or op.summary
    if any(w.kind == "id" for w in grammar):
        description += " " + ID_NOTE
    parser = Parser(prog=f"{PROG} {cli.path}", description=description)
    if grammar:
        parser.add_argument("words", nargs="*", metavar=" ".join(w.metavar for w in grammar),
                            help="; ".join(f"{w.metavar}: {fields[w.field].description}" for w in grammar
                                           if w.kind != "id" and fields[w.field].description) or None)
    positional = {w.field for w in grammar if w.kind != "text"}
    for name, info in fields.items():
        if name in op.internal or name in cli.fixed or name in positional:
            continue
        if cli.only is not None and name not in cli.only:
            continue
        _add_flag(parser, name, info, cli)
    for option in cli.options:
        parser.add_argument(option.flag, metavar=option.metavar, choices=option.choices, help=option.help)
    if cli.json:
        parser.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
    return parser


def arguments_of(op: Operation, cli: Cli, namespace: argparse.Namespace) -> dict[str, Any]:
    """The request's arguments: the bound words, the flags given, and the entry's fixed values."""
    fields = op.request_model().model_fields
    grammar = words_of(cli)
    bound = bind_words(cli, grammar, getattr(namespace, "words", []), fields) if grammar else {}
    args: dict[str, Any] = dict(cli.defaults)
    for name, info in fields.items():
        value = getattr(namespace, name, None)
        if value is None:
            continue
        if typing.get_origin(_unwrap(info.annotation)) is dict:
            value = _pairs(value, cli.flags.get(name, name.replace("_", "-")))
        args[name] = value
    for name, value in bound.items():
        if name in args and name not in cli.defaults:
            flag = cli.flags.get(name, name.replace("_", "-"))
            raise InvalidInput(f"give the {name.replace('_', ' ')} as words or --{flag}, not both")
        args[name] = value
    args.update(cli.fixed)
    return args


# -- running ------------------------------------------------------------------------------------
def call_view(view: Any, result: Any, request: Any, options: dict[str, Any]) -> str:
    """A view takes the result, and the request and the options when it names them."""
    wanted = inspect.signature(view).parameters
    extra = {name: value for name, value in (("request", request), ("options", options)) if name in wanted}
    return str(view(result, **extra))


def run(op: Operation, cli: Cli, words: list[str]) -> int:
    namespace = build_parser(op, cli).parse_args(words)
    arguments = arguments_of(op, cli, namespace)
    from session_manager.service import validate_request

    request = validate_request(op.name, arguments)
    if op.runs:
        operations.load(op.runs)(request)
        return 0
    from session_manager.commands import service

    svc = service()
    result = getattr(svc, op.name)(request)
    options = {o.flag.lstrip("-").replace("-", "_"): getattr(namespace, o.flag.lstrip("-").replace("-", "_"))
               for o in cli.options}
    options.update(json=getattr(namespace, "json", False), service=svc)
    view_path = cli.view or op.view
    view = operations.load(view_path) if view_path else None
    if view is not None and "options" in inspect.signature(view).parameters:
        print(terminal_safe(call_view(view, result, request, options)))  # the view handles --json and its options
    elif options["json"] or view is None:
        print(result.model_dump_json(indent=2) if hasattr(result, "model_dump_json") else terminal_safe(str(result)))
    else:
        print(terminal_safe(call_view(view, result, request, options)))
    for warning in svc.warnings:
        print(f"warning: {terminal_safe(warning)}", file=sys.stderr)
    return 0


def top_help() -> str:
    lines = [f"usage: {PROG} COMMAND [ARGS] [--json]", "",
             "Durable, resumable sessions for AI-assisted work. " + ID_NOTE, "", "commands:"]
    for path, (op, cli) in operations.BY_PATH.items():
        summary = (cli.summary or op.tool_summary or op.summary).split(". ")[0].rstrip(".")
        lines.append(f"  {path:<16} {summary}")
    lines += ["", f"`{PROG} COMMAND --help` tells more. Options: --version, --help."]
    return "\n".join(lines)


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    found = operations.cli_match(argv)
    if found is None:
        verbs = operations.groups().get(argv[0])
        if verbs:
            if len(argv) > 1 and argv[1] in ("-h", "--help"):
                print(f"usage: {PROG} {argv[0]} VERB ...\n\nverbs: {', '.join(verbs)}")
                return 0
            given = f" (got {argv[1]!r})" if len(argv) > 1 else ""
            raise InvalidInput(f"{argv[0]} takes a verb: {', '.join(verbs)}{given}")
        raise InvalidInput(f"unknown command {argv[0]!r}; commands: {', '.join(sorted(set(operations.BY_PATH)))}"
                           f" (see `{PROG} --help`)")
    op, cli, used = found
    return run(op, cli, argv[used:])


def command_name(argv: list[str]) -> str:
    """The command's name only (`stage complete`), never its arguments: they may hold secrets."""
    found = operations.cli_match(argv)
    return found[1].path if found else "(unknown command)"


def fast_path(words: list[str]) -> int | None:
    """`hook EVENT` and `statusline` run often (Claude Code calls them at every reply, tool call or
    refresh): they skip the registry's parser and request models (pydantic) and run their
    stdlib-first entry points directly. None for every other command line."""
    if words[:1] == ["hook"] and len(words) <= 2 and not any(w.startswith("-") for w in words[1:]):
        from session_manager import hooks

        return hooks.main(words[1] if len(words) == 2 else None)
    if words == ["statusline"]:
        from session_manager import statusline

        return statusline.main()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        fast = fast_path(words)
        if fast is not None:
            return fast
        return dispatch(words)
    except SessionError as exc:
        # the same message the MCP tools return, word for word (field names as the tools name them)
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # our fault: one line for the user, the traceback in a log
        from session_manager.errorlog import log_internal_error

        try:
            where = f"details in {log_internal_error(command_name(words))}"
        except OSError:
            where = "the log could not be written safely; the details are above"
        print(f"error: internal error ({type(exc).__name__}: {terminal_safe(str(exc))}); {where}", file=sys.stderr)
        return 1
