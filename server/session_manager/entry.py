"""The `session-manager` program's entry point.

`hook EVENT` and `statusline` run at every reply, tool call and status refresh of Claude Code:
they go straight to their stdlib-first modules, without compiling or importing the CLI, the
registry or pydantic. Every other command line goes to `cli.main`.
"""

from __future__ import annotations

import sys


def main() -> int:
    words = sys.argv[1:]
    if words[:1] == ["hook"] and len(words) <= 2 and not any(w.startswith("-") for w in words[1:]):
        from session_manager import hooks

        return hooks.main(words[1] if len(words) == 2 else None)
    if words == ["statusline"]:
        from session_manager import statusline

        return statusline.main()
    from session_manager.cli import main as cli_main

    return cli_main()
