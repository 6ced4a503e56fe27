"""The names the journal and the backups use, typed: every event a change writes to a session's
`events.jsonl`, and every trigger that re-renders the markdown and may take a backup.

Both are `StrEnum`s: a member is its string, so journals written before this module existed read
the same, and readers may compare a record's `event` with a member directly.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    # lifecycle
    session_started = "session_started"
    carried_over = "carried_over"
    session_status = "session_status"
    session_ended = "session_ended"
    # pipeline
    stage_status = "stage_status"
    stage_completed = "stage_completed"
    stage_bypassed = "stage_bypassed"
    stage_skipped = "stage_skipped"
    stage_closed = "stage_closed"
    quality_evaluated = "quality_evaluated"
    routed_back = "routed_back"
    failure_recorded = "failure_recorded"
    escalated = "escalated"
    resumed = "resumed"
    alert_raised = "alert_raised"
    alert_cleared = "alert_cleared"
    # progress
    task_added = "task_added"
    task_started = "task_started"
    task_completed = "task_completed"
    task_failed = "task_failed"
    task_blocked = "task_blocked"
    task_unblocked = "task_unblocked"
    task_edited = "task_edited"
    task_removed = "task_removed"
    blocker_added = "blocker_added"
    blocker_cleared = "blocker_cleared"
    learning_added = "learning_added"
    decision_added = "decision_added"
    # money
    cost_recorded = "cost_recorded"
    cost_removed = "cost_removed"
    usage_attached = "usage_attached"
    claude_session_attached = "claude_session_attached"
    # after a change
    backup_failed = "backup_failed"
    # batches (their own journal) and the project's templates
    batch_started = "batch_started"
    member_added = "member_added"
    batch_ended = "batch_ended"
    templates_evolved = "templates_evolved"


class Trigger(StrEnum):
    """Why the markdown is refreshed after a change, and whether a backup is taken at once
    (`IMMEDIATE`, from the design: start, stage completion, before recovery, resume, end)."""

    session_start = "session start"
    update = "update"
    session_end = "session end"
    stage_start = "stage start"
    stage_complete = "stage complete"
    before_recovery = "before recovery"
    resume = "resume"
    stage_bypassed = "stage bypassed"
    stage_skipped = "stage skipped"
    cost_recorded = "cost recorded"
    cost_removed = "cost removed"
    usage_attached = "usage attached"
    usage_bound = "usage bound"
    batch_start = "batch start"
    batch_end = "batch end"
    templates_evolved = "templates evolved"
    # backups asked for by the surfaces rather than by a change
    manual = "manual"
    interval = "interval"
    before_restore = "before restore"
    stop = "stop"
    pre_compact = "pre-compact"


IMMEDIATE = frozenset({Trigger.session_start, Trigger.stage_complete, Trigger.before_recovery, Trigger.resume,
                       Trigger.session_end})
