"""Property-based bad input: whatever the caller sends, the answer is a clear SessionError or a
success, never a crash, and a refused call leaves the `.claude/` tree byte-for-byte unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tree_snapshot
from session_manager import operations
from session_manager.errors import SessionError
from session_manager.service import Service

EXAMPLES = int(os.environ.get("SM_BAD_INPUT_EXAMPLES", "60"))

nasty_text = st.one_of(
    st.sampled_from([
        "../", "../../etc/passwd", "/etc/passwd", "a\x00b", "x" * 5000, "", " ", "ep_001_20200101_0000",
        "dev_20261121_0930/../../x", "-rf", "--help", "NaN", "inf", "prod", "99", "01_deep_research",
        "{{ ''.__class__.__mro__ }}", "$(rm -rf /)", "C:\\windows", "\n", "ünïcödé",
    ]),
    st.text(max_size=40),
)
nasty_number = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -0.01, 1.5, 10**20, 0, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(),
)
nasty = st.one_of(
    st.none(), nasty_text, nasty_number, st.booleans(),
    st.lists(st.one_of(nasty_text, nasty_number), max_size=5),
    st.dictionaries(nasty_text, st.one_of(nasty_text, nasty_number), max_size=4),
    st.lists(st.just("x"), min_size=201, max_size=250),
)

# every service operation of the registry, with every argument a caller can give it
LEFT_OUT = {"backup_push": "a generated remote could be a real path that gets pushed to"}
OPERATIONS = {op.name: op.exposed_fields() for op in operations.OPERATIONS
              if not op.runs and op.name not in LEFT_OUT}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Service, str]:
    root = tmp_path_factory.mktemp("bad-input")
    service = Service(root, actor="test")
    session_id = service.start(level="prod", number=1).state.session_id
    return service, session_id


def test_bad_input_is_refused_cleanly(world, record_property) -> None:
    service, session_id = world
    counts: dict[str, int] = {}
    for operation in sorted(OPERATIONS):
        counts[operation] = _hammer(service, session_id, operation)
    total = sum(counts.values())
    record_property("counts", f"bad-input test (service): {total} cases over {len(counts)} operations, each refused"
                    " with one line and nothing written, or accepted")
    assert total >= EXAMPLES * len(OPERATIONS) * 0.5


def _hammer(service: Service, session_id: str, operation: str) -> int:
    fields = OPERATIONS[operation]
    count = 0

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.fixed_dictionaries({}, optional={f: nasty for f in fields}),
           st.sampled_from([None, "real", "keep"]), st.booleans())
    def check(kwargs: dict, id_choice: str | None, extra_key: bool) -> None:
        nonlocal count
        if "session_id" in fields and id_choice == "real":
            kwargs["session_id"] = session_id
        if extra_key:
            kwargs["not_an_argument"] = 1
        claude = Path(service.root) / ".claude"
        before = tree_snapshot(claude)
        count += 1
        try:
            getattr(service, operation)(**kwargs)
        except SessionError as exc:
            message = str(exc)
            assert message and "\n" not in message.strip() and "Traceback" not in message
            assert tree_snapshot(claude) == before, f"{operation}({kwargs!r}) wrote despite refusing"
        else:
            assert not extra_key, "an unknown argument must be refused"

    check()
    return count
