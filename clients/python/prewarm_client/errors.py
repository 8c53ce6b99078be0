"""Typed errors raised by :class:`prewarm_client.PrewarmClient`.

Every error coming from an API answer carries the HTTP status and the
API's error body (``{"error": ..., "details": ...}``).
"""

import builtins
from typing import Any, Dict, Optional


class PrewarmError(Exception):
    """Base class of every error of this package."""


class ConnectionFailed(PrewarmError):
    """The server could not be reached."""


class APIError(PrewarmError):
    """The server answered with an error status.

    ``status_code`` is the HTTP status, ``body`` the parsed error body,
    ``error`` and ``details`` its two main fields.
    """

    def __init__(self, status_code: int, body: Dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        self.error: str = str(body.get("error") or "HTTP %d" % status_code)
        self.details: Optional[str] = body.get("details")
        message = self.error if not self.details else "%s: %s" % (self.error, self.details)
        super().__init__("%s (HTTP %d)" % (message, status_code))


class ValidationError(APIError):
    """400/413/422: the request was refused as invalid."""


class Unauthorized(APIError):
    """401/403: no token, a bad token, or a role that may not do this."""


class TaskNotFound(APIError):
    """404: no task (or scheduled task, or execution) with this id."""


NotFound = TaskNotFound


class Conflict(APIError):
    """409: e.g. cancelling a task that already ended (``body["status"]`` says how)."""


class TaskFailed(PrewarmError):
    """A waited-for task ended ``failed``; ``task`` is its final view."""

    def __init__(self, task: Dict[str, Any]) -> None:
        self.task = task
        failed = task.get("failedNodeDetails") or []
        nodes = ", ".join(
            "%s (%s: %s)" % (f.get("nodeName"), f.get("image"), f.get("reason")) for f in failed[:10]
        )
        reason = task.get("reason")
        what = "task %s %s" % (task.get("taskId"), task.get("status"))
        if reason:
            what += " (%s: %s)" % (reason, task.get("errorMessage"))
        if nodes:
            what += "; failed nodes: " + nodes
        super().__init__(what)


class TaskCancelled(TaskFailed):
    """A waited-for task ended ``cancelled``."""


class TimeoutError(PrewarmError, builtins.TimeoutError):  # noqa: A001 - the SDK's documented name
    """The task did not end within the given time."""


def error_for(status_code: int, body: Dict[str, Any]) -> APIError:
    """The typed error for an HTTP error answer."""
    if status_code in (401, 403):
        return Unauthorized(status_code, body)
    if status_code == 404:
        return TaskNotFound(status_code, body)
    if status_code == 409:
        return Conflict(status_code, body)
    if status_code in (400, 413, 422):
        return ValidationError(status_code, body)
    return APIError(status_code, body)
