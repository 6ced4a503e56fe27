"""Ordered upgrades of `pipeline_status.json`, run on load.

Each entry upgrades from version N to N+1, in order, each tested against a checked-in file of
the old version (`tests/fixtures/`). A file from a newer version than this tool knows is
refused, not guessed at.

* 1 -> 2: seed 004's task model. A v1 task had only an id, a title and times; it now has a
  status (done for the tasks in `tasks_completed`, pending for those in `tasks_pending`), and
  the progress gains `tasks_failed`. Nothing is guessed: estimates, agents and actual minutes
  stay unknown (null), the session's outcome (bugs, tests, docs) unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from session_manager.errors import CorruptState
from session_manager.model import SCHEMA_VERSION



def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    progress = data.get("progress")
    if isinstance(progress, dict):
        for key, status in (("tasks_completed", "done"), ("tasks_pending", "pending")):
            for task in progress.get(key) or []:
                if isinstance(task, dict):
                    task.setdefault("status", status)
        progress.setdefault("tasks_failed", [])
    return data


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _v1_to_v2}


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
