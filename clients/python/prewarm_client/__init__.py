"""Python SDK of the prewarm service.

    from prewarm_client import PrewarmClient
    client = PrewarmClient("http://prewarm.example.com", token="...")
    task = client.create_task(["nginx:1.25"], batch_size=10, node_selector={"pool": "web"})
    for event in client.watch(task["taskId"]):
        print(event["type"], event["data"].get("percentage"))
"""

from .client import ImagePrewarmClient, PrewarmClient, TaskEvent
from .errors import (
    APIError,
    Conflict,
    ConnectionFailed,
    NotFound,
    PrewarmError,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TimeoutError,
    Unauthorized,
    ValidationError,
)

__all__ = [
    "APIError",
    "Conflict",
    "ConnectionFailed",
    "ImagePrewarmClient",
    "NotFound",
    "PrewarmClient",
    "PrewarmError",
    "TaskCancelled",
    "TaskEvent",
    "TaskFailed",
    "TaskNotFound",
    "TimeoutError",
    "Unauthorized",
    "ValidationError",
]
