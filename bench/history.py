"""A project with a long history: `n` ended sessions (copies of one real ended session, each with
its own id and state) and `active` sessions in progress, made through the tool itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

VERSION = 1  # bump when the generated project changes: cached copies (bench_scale.py) are then rebuilt


def make_project(root: Path, ended: int, active: int = 3) -> list[str]:
    """Build the project at `root` (a git repository); returns the active session ids."""
    from session_manager.service import Service

    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        os.system(f"git init -q {root}")
    service = Service(root, actor="bench")
    seed = service.start(level="dev", tag="seed").state.session_id
    service.stage_start(session_id=seed, stage="initialization")
    service.stage_complete(session_id=seed, stage="initialization", quality={"overall": 0.9}, cost_usd=0.1)
    service.end(session_id=seed, close_open_stages=True, summary="seed")
    folder = service.store.session_dir(seed)
    state = json.loads((folder / "pipeline_status.json").read_text())
    metadata = (folder / "metadata.json").read_text()
    for n in range(ended):
        session_id = f"dev_2026{(n // 28) % 12 + 1:02d}{n % 28 + 1:02d}_h{n}"
        target = folder.parent / session_id
        shutil.copytree(folder, target)
        state["session_id"] = session_id
        (target / "pipeline_status.json").write_text(json.dumps(state, indent=1))
        (target / "metadata.json").write_text(metadata.replace(seed, session_id))
    ids = [service.start(level="dev", tag=f"live{n}", topic=f"work {n}").state.session_id for n in range(active)]
    service.status()  # the index learns of the copied folders once, here, not in a timed call
    return ids
