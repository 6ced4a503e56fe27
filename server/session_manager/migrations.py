"""Ordered upgrades of `pipeline_status.json`, run on load.

Each entry upgrades from version N to N+1. Version 1 is the first released schema, so the
table is empty today; a future change adds `2: _v1_to_v2` here plus a test against a
checked-in v1 file. A file from a newer version than this tool knows is refused, not guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from session_manager.errors import CorruptState
from session_manager.model import SCHEMA_VERSION

UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upgrade(data: dict[str, Any], session_id: str, restore: str) -> dict[str, Any]:
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptState(
            f"{session_id}: pipeline_status.json has an invalid schema_version {version!r};"
            f" restore it with `{restore}`"
        )
    if version > SCHEMA_VERSION:
        raise CorruptState(
            f"{session_id}: pipeline_status.json has schema_version {version}, newer than this"
            f" session-manager understands ({SCHEMA_VERSION}); upgrade session-manager or `{restore}`"
        )
    while version < SCHEMA_VERSION:
        step = UPGRADES.get(version + 1)
        if step is None:
            raise CorruptState(f"{session_id}: no upgrade from schema_version {version}; `{restore}`")
        data = step(data)
        version += 1
        data["schema_version"] = version
    return data
