"""Making user text safe where it lands: markdown files and terminals.

* `markdown_text`: text a user typed (a task, a blocker, a note, a title) rendered into markdown
  can neither start a heading, a list item or a checkbox (`- [x]`) nor add lines: line breaks
  become spaces and a leading block marker is backslash-escaped (markdown shows it as typed).
* `terminal_safe`: text printed to a terminal cannot move the cursor, change colours, retitle
  the window or reorder what follows (bidi controls): control characters and bidi marks are
  shown as `\\x1b`, `\\u202e`.
"""

from __future__ import annotations

import re
from typing import Any

# a line starting like this would be markdown structure: heading, quote, list, rule, table, html
_BLOCK_START = re.compile(r"^(?:#|>|[-+*](?=\s|$)|\d{1,9}[.)](?=\s|$)|=|_{3}|\||<|`{3}|~{3})")
_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
# C0 and C1 controls (tab and newline are handled by `keep`), DEL, and the bidi controls
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def markdown_text(text: str) -> str:
    """One line of markdown that renders `text` as typed (see the module docstring)."""
    flat = " ".join(part.strip() for part in _BREAKS.split(text) if part.strip()) if _BREAKS.search(text) else text
    return "\\" + flat if _BLOCK_START.match(flat) else flat


def markdown_variables(value: Any) -> Any:
    """`value` (template variables: dicts, lists, strings) with every string made safe by
    `markdown_text`; other values are returned as they are."""
    if isinstance(value, str):
        return markdown_text(value)
    if isinstance(value, dict):
        return {key: markdown_variables(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [markdown_variables(item) for item in value]
    return value


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, keep: str = "\n\t") -> str:
    """`text` with control characters and bidi marks shown escaped (`\\x1b`, `\\u202e`), so
    it cannot drive the terminal; the characters in `keep` (newline and tab) pass as they are."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m), text)
