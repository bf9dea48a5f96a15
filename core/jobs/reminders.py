"""Reminding assignees of tasks that have come due.

The job runs every minute and may overlap with itself, be retried, or run again after
a crash (the queue is at-least-once). A task is therefore claimed by setting its
``reminded_at`` in the same transaction that writes the notification: however often
the job runs, each due task gets exactly one notification and one `TaskDue` event.
"""

from __future__ import annotations

from core.events import TaskDue, emit
from core.jobs import actor
from core.services.common import utcnow, write
from core.tables import Notification, Task

BATCH = 500
"""Tasks handled per run; the rest wait a minute rather than make one run very long."""


async def remind_due_tasks() -> int:
    """Notify the assignee of every open, due, not yet reminded task; returns how many."""
    now = utcnow()
    due = (
        await Task.select(Task.id, Task.title, Task.assignee)
        .where(Task.done_at.is_null() & Task.reminded_at.is_null() & (Task.due_at <= now))
        .order_by(Task.due_at)
        .limit(BATCH)
    )
    reminded = 0
    for task in due:
        async with write():
            claimed = (
                await Task.update({Task.reminded_at: now})
                .where(
                    (Task.id == task["id"]) & Task.reminded_at.is_null() & Task.done_at.is_null()
                )
                .returning(Task.id)
            )
            if not claimed:  # another run got there first, or it was just completed
                continue
            await Notification.insert(
                Notification(
                    user=task["assignee"],
                    kind="task.due",
                    text=task["title"],
                    url=f"/tasks/{task['id']}",
                    created_at=now,
                )
            )
            emit(TaskDue(task_id=task["id"], assignee_id=task["assignee"]))
        reminded += 1
    return reminded


@actor(max_retries=0)
async def send_due_reminders() -> None:
    # No retries: the next run, a minute later, picks up whatever this one missed.
    await remind_due_tasks()
