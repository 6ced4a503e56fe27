"""`session-manager render [ID] [NAME]` and `session-manager templates list|show`."""

from __future__ import annotations

import argparse
from typing import Any

from session_manager.errors import InvalidInput


def cmd_render(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, _split_id, service

    session_id, rest = _split_id(args.words)
    if len(rest) > 1:
        raise InvalidInput("render takes [ID] [NAME], e.g. `render plan` or `render dev_20261121_0930 review`")
    result = service().render(session_id=session_id, name=rest[0] if rest else None)

    def human(r: Any) -> str:
        text = f"rendered {', '.join(r.files)} in {r.folder}"
        added = ", ".join(f"{n} line{'s' if n > 1 else ''} to {name}" for name, n in r.memory.items())
        return text + (f"\nmemory: added {added}" if added else "")

    _emit(args, result, human)


def cmd_templates_list(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service
    from session_manager.views import table

    def human(r: Any) -> str:
        rows = [(t.name, t.level, t.source, t.path) for t in r.templates]
        note = (f"\n\nTo change one: session-manager templates copy NAME [--level LEVEL] puts the shipped file"
                f" in {r.project_folder}/ for you to edit; it then wins over the shipped one.")
        return table(("TEMPLATE", "LEVEL", "SOURCE", "FILE"), rows) + note

    _emit(args, service().templates_list(), human)


def cmd_templates_show(args: argparse.Namespace) -> None:
    from session_manager.cli import service

    print(service().template_show(name=args.name, level=args.level), end="")


def cmd_templates_copy(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service

    result = service().template_copy(name=args.name, level=args.level)
    _emit(args, result, lambda r: f"copied {r.source} to {r.path}: edit it there; it now wins over the shipped one")


def register(sub: Any, command: Any) -> None:
    from session_manager.cli import Parser

    p = command("render", cmd_render, "Re-render a session's markdown (all files, or one: context, plan, tasks,"
                " tests, review, completed); with no active session, the session changed last.")
    p.add_argument("words", nargs="*", metavar="[ID] [NAME]")

    group = sub.add_parser("templates", help="the markdown templates (list, show, copy)")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
    text = "List every template and the file used for it: the project's override or the shipped one."
    p = verbs.add_parser("list", help=text, description=text)
    p.set_defaults(handler=cmd_templates_list)
    p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
    text = "Print a template (the file used for it), to copy into .claude/templates/ and edit."
    p = verbs.add_parser("show", help=text, description=text)
    p.set_defaults(handler=cmd_templates_show)
    p.add_argument("name", metavar="NAME", help="e.g. plan, review.md, _macros")
    p.add_argument("--level", help="the level's variant (dev, prod, platform, coded)")
    text = "Copy a shipped template into .claude/templates/ (a level's variant into its level folder) to edit it."
    p = verbs.add_parser("copy", help=text, description=text)
    p.set_defaults(handler=cmd_templates_copy)
    p.add_argument("name", metavar="NAME", help="e.g. plan, review.md, _macros")
    p.add_argument("--level", help="the level's variant (dev, prod, platform, coded)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
