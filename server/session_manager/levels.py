"""The four session levels, their aliases, directories and id formats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from session_manager.errors import InvalidInput


LevelName = Literal["dev", "production", "platform", "coded"]


@dataclass(frozen=True)
class Level:
    number: int
    name: LevelName
    dirname: str
    prefix: str
    aliases: tuple[str, ...]

    @property
    def needs_number(self) -> bool:
        return self.name == "production"


LEVELS: dict[str, Level] = {
    "dev": Level(1, "dev", "level-1-dev", "dev", ("1", "dev", "development")),
    "production": Level(2, "production", "level-2-production", "ep", ("2", "prod", "production")),
    "platform": Level(3, "platform", "level-3-platform-dev", "plan", ("3", "platform", "plan")),
    "coded": Level(4, "coded", "level-4-coded", "code", ("4", "coded", "code")),
}
LEVEL_NAMES = tuple(LEVELS)
_ALIASES = {alias: level for level in LEVELS.values() for alias in level.aliases}
_BY_PREFIX = {level.prefix: level for level in LEVELS.values()}

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# The one pattern every session id must match before it is used in a path:
# prefix, optional episode number, date, time-or-tag, optional clash suffix.
SESSION_ID_PATTERN = re.compile(
    r"^(?P<prefix>dev|plan|code|ep)"
    r"(?:_(?P<number>\d{3,6}))?"
    r"_(?P<date>\d{8})"
    r"_(?P<tag>[a-z0-9][a-z0-9-]{0,39})"
    r"(?:_(?P<clash>[2-9]|[1-9][0-9]{1,3}))?$"
)


def resolve_level(text: str | int) -> Level:
    """Turn `2`, `prod`, `production` ... into a Level, or say what is accepted."""
    key = str(text).strip().lower()
    level = _ALIASES.get(key)
    if level is None:
        accepted = ", ".join(f"{lv.name} ({'/'.join(lv.aliases)})" for lv in LEVELS.values())
        shown = str(text) if len(str(text)) <= 40 else str(text)[:37] + "..."
        raise InvalidInput(f"unknown level {shown!r}; use one of: {accepted}")
    return level


def check_session_id(session_id: str) -> re.Match[str]:
    """Validate an id against the one strict pattern; raise InvalidInput otherwise."""
    if not isinstance(session_id, str):
        raise InvalidInput(f"session id must be text, not {type(session_id).__name__}")
    match = SESSION_ID_PATTERN.match(session_id)
    if match is None or (match["prefix"] == "ep") != (match["number"] is not None):
        shown = session_id if len(session_id) <= 80 else session_id[:77] + "..."
        raise InvalidInput(
            f"invalid session id {shown!r}: expected e.g. ep_005_20261121_0930, dev_20261121_0930,"
            " plan_20261121_0930 or code_20261121_0930"
        )
    return match


def level_of(session_id: str) -> Level:
    return _BY_PREFIX[check_session_id(session_id)["prefix"]]


def looks_like_session_id(text: str) -> bool:
    try:
        check_session_id(text)
    except InvalidInput:
        return False
    return True
