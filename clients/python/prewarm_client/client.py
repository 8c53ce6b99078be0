"""The HTTP client: tasks, live progress (Server-Sent Events), scheduled tasks."""

import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional

import requests

from .errors import (
    ConnectionFailed,
    PrewarmError,
    TaskCancelled,
    TaskFailed,
    TimeoutError,
    error_for,
)

try:  # Python 3.8+
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore

Json = Dict[str, Any]

#: Seconds an idle kept-alive connection may be reused: less than the
#: server's header-read timeout (10 s by default), which also closes an
#: HTTP/1.1 connection waiting for its next request, so a request never goes
#: out on a connection the server is closing.
POOL_IDLE_TIMEOUT = 5.0


def _monotonic() -> float:
    return time.monotonic()


class TaskEvent(TypedDict):
    """One message of a task's live stream.

    ``type`` is ``"progress"`` (``data``: the progress counters plus
    ``status``) or ``"finished"`` (``data``: the final task view); ``id`` is the
    SSE event id, usable as ``last_event_id`` to resume.
    """

    type: str
    data: Json
    id: Optional[str]


_TERMINAL = ("completed", "failed", "cancelled")

# Task create fields: Python keyword -> API field.
_TASK_FIELDS = {
    "images": "images",
    "batch_size": "batchSize",
    "node_selector": "nodeSelector",
    "node_names": "nodeNames",
    "priority": "priority",
    "max_retries": "maxRetries",
    "retry_strategy": "retryStrategy",
    "retry_delay": "retryDelay",
    "webhook_url": "webhookUrl",
    "pull_policy": "pullPolicy",
    "image_pull_secrets": "imagePullSecrets",
    "tolerate_taints": "tolerateTaints",
    "pin_digests": "pinDigests",
    "timeout_seconds": "timeoutSeconds",
    "priority_class_name": "priorityClassName",
    "registry_pull_rate": "registryPullRate",
}

_SCHEDULE_FIELDS = {
    "name": "name",
    "description": "description",
    "cron_expr": "cronExpr",
    "timezone": "timezone",
    "enabled": "enabled",
    "task_config": "taskConfig",
    "overlap_policy": "overlapPolicy",
    "timeout_seconds": "timeoutSeconds",
    "starting_deadline_seconds": "startingDeadlineSeconds",
}

_POLICY_FIELDS = {
    "name": "name",
    "enabled": "enabled",
    "images": "images",
    "node_selector": "nodeSelector",
    "node_names": "nodeNames",
    "tolerate_taints": "tolerateTaints",
    "pull_policy": "pullPolicy",
    "image_pull_secrets": "imagePullSecrets",
    "batch_size": "batchSize",
    "priority": "priority",
    "from_workload": "fromWorkload",
    "remove_taint": "removeTaint",
}


def _camel(fields: Mapping[str, Any], names: Mapping[str, str]) -> Json:
    """Drops ``None`` values and renames snake_case keywords to the API's camelCase
    (keys already in camelCase pass through unchanged)."""
    out: Json = {}
    for key, value in fields.items():
        if value is None:
            continue
        out[names.get(key, key)] = value
    return out


class PrewarmClient:
    """A client of one prewarm server.

    ``base_url`` is the service's address (``http://prewarm.example.com``);
    ``token`` is sent as ``Authorization: Bearer`` when given. ``ca_cert``
    is a PEM bundle of the certificate authorities an ``https://`` server's
    certificate is checked against (default: ``$PREWARM_CA_CERT``, else the
    system's). Every method returns the API's JSON as dicts and raises the
    typed errors of :mod:`prewarm_client.errors`.
    """

    def __init__(
        self,
        base_url: str,
        token: Optional[str] = None,
        timeout: float = 30.0,
        session: Optional[requests.Session] = None,
        ca_cert: Optional[str] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        ca_cert = ca_cert or os.environ.get("PREWARM_CA_CERT") or None
        if ca_cert:
            if not os.path.isfile(ca_cert):
                raise ValueError("ca_cert %r is not a file" % ca_cert)
            self.session.verify = ca_cert
        # Passed with every request: a session-level setting alone loses to
        # $REQUESTS_CA_BUNDLE.
        self._verify = self.session.verify
        if token:
            self.session.headers["Authorization"] = "Bearer %s" % token
        self._last_used = _monotonic()

    # -- plumbing ---------------------------------------------------------

    def _pooled(self) -> requests.Session:
        """The session, its pooled connections closed first when none was
        used for ``POOL_IDLE_TIMEOUT`` seconds (requests keeps them forever)."""
        now = _monotonic()
        if now - self._last_used > POOL_IDLE_TIMEOUT:
            for adapter in self.session.adapters.values():
                adapter.close()
        self._last_used = now
        return self.session

    def _request(
        self,
        method: str,
        path: str,
        params: Optional[Json] = None,
        json: Optional[Json] = None,
    ) -> Json:
        try:
            resp = self._pooled().request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                timeout=self.timeout,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise ConnectionFailed("cannot reach %s: %s" % (self.base_url, exc)) from exc
        if resp.status_code >= 400:
            raise error_for(resp.status_code, _error_body(resp))
        try:
            return resp.json()
        except ValueError as exc:
            raise PrewarmError("not JSON (HTTP %d): %.200s" % (resp.status_code, resp.text)) from exc

    # -- tasks ------------------------------------------------------------

    def create_task(
        self,
        images: List[str],
        batch_size: Optional[int] = 10,
        node_selector: Optional[Dict[str, str]] = None,
        **options: Any,
    ) -> Json:
        """Creates a task; returns its view (``taskId``, ``status``, ...).

        ``options`` are the other create fields, in snake_case (``node_names``,
        ``priority``, ``max_retries``, ``retry_strategy``, ``retry_delay``,
        ``webhook_url``, ``pull_policy``, ``image_pull_secrets``,
        ``tolerate_taints``, ``pin_digests``, ``timeout_seconds``,
        ``priority_class_name``, ``registry_pull_rate`` as
        ``{"ghcr.io": "600/1m"}``).
        """
        unknown = set(options) - set(_TASK_FIELDS)
        if unknown:
            raise TypeError("unknown task option(s): %s" % ", ".join(sorted(unknown)))
        body = _camel(
            dict(images=list(images), batch_size=batch_size, node_selector=node_selector or None, **options),
            _TASK_FIELDS,
        )
        return self._request("POST", "/api/v1/tasks", json=body)

    def plan_task(
        self,
        images: List[str],
        batch_size: Optional[int] = 10,
        node_selector: Optional[Dict[str, str]] = None,
        **options: Any,
    ) -> Json:
        """What :meth:`create_task` with these arguments would do now, without doing it.

        Returns the plan (``selectedNodes``, ``skippedByReason``, ``images``,
        ``jobs``, ``apiWrites``, ``etaSeconds``, ``slowestNodes``, ...); nothing is
        stored or created.
        """
        unknown = set(options) - set(_TASK_FIELDS)
        if unknown:
            raise TypeError("unknown task option(s): %s" % ", ".join(sorted(unknown)))
        body = _camel(
            dict(images=list(images), batch_size=batch_size, node_selector=node_selector or None, **options),
            _TASK_FIELDS,
        )
        return self._request("POST", "/api/v1/tasks", params={"dryRun": "true"}, json=body)

    def coverage(
        self,
        images: List[str],
        node_selector: Optional[Dict[str, str]] = None,
        group_by: Optional[str] = None,
    ) -> Json:
        """How many Ready nodes matching ``node_selector`` report each image.

        Returns ``{totalNodes, percentage, images: [{image, nodesWithImage,
        percentage}], nodes: [{nodeName, missing}], ...}``; the kubelet lists at
        most 50 images per node (``nodesAtImageCap``).
        """
        params: Json = {"images": ",".join(images)}
        if node_selector:
            params["nodeSelector"] = ",".join("%s=%s" % kv for kv in sorted(node_selector.items()))
        if group_by:
            params["groupBy"] = group_by
        return self._request("GET", "/api/v1/coverage", params=params)

    def node_stats(self, limit: int = 20) -> Json:
        """The nodes' learned pull speeds, slowest first (the nodes tasks start first).

        Returns ``{nodes: [{node, secondsPerPull, samples, updatedAt}], total}``.
        """
        return self._request("GET", "/api/v1/nodes/stats", params={"limit": limit})

    def get_task(self, task_id: str) -> Json:
        """One task view."""
        return self._request("GET", "/api/v1/tasks/%s" % _seg(task_id))

    def list_tasks(self, status: Optional[str] = None, limit: int = 10, offset: int = 0) -> Json:
        """A page of tasks, newest first: ``{tasks, total, limit, offset}``."""
        params: Json = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._request("GET", "/api/v1/tasks", params=params)

    def list_task_nodes(
        self,
        task_id: str,
        status: Optional[str] = None,
        image: Optional[str] = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Json:
        """A page of the task's (node, image) results, by node name:
        ``{nodes, total, limit, offset}``. ``status`` is one of pending,
        pulled, present, failed, skipped; ``limit`` is 1..=1000."""
        params: Json = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if image:
            params["image"] = image
        return self._request("GET", "/api/v1/tasks/%s/nodes" % _seg(task_id), params=params)

    def iter_task_nodes(
        self,
        task_id: str,
        status: Optional[str] = None,
        image: Optional[str] = None,
        page_size: int = 1000,
    ) -> Iterator[Json]:
        """Every (node, image) result of the task matching the filters,
        fetched ``page_size`` at a time."""
        offset = 0
        while True:
            page = self.list_task_nodes(task_id, status=status, image=image, limit=page_size, offset=offset)
            results = page.get("nodes") or []
            for result in results:
                yield result
            offset += len(results)
            if not results or offset >= page.get("total", 0):
                return

    def cancel_task(self, task_id: str) -> Json:
        """Cancels a pending or running task; :class:`Conflict` if it already ended."""
        return self._request("DELETE", "/api/v1/tasks/%s" % _seg(task_id))

    def wait_for_completion(self, task_id: str, timeout: float = 600, poll_interval: float = 5) -> Json:
        """Polls until the task ends; returns the final view when it completed.

        Raises :class:`TaskFailed` (or :class:`TaskCancelled`) with the final
        view otherwise, and :class:`TimeoutError` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            task = self.get_task(task_id)
            _raise_unless_completed(task)
            if task["status"] == "completed":
                return task
            if time.monotonic() + poll_interval > deadline:
                raise TimeoutError("task %s did not end within %s seconds" % (task_id, timeout))
            time.sleep(poll_interval)

    def watch(self, task_id: str, last_event_id: Optional[str] = None) -> Iterator[TaskEvent]:
        """Follows the task's live stream (Server-Sent Events).

        Yields a ``progress`` event per change and ends after the
        ``finished`` event (whose ``data`` is the final task view). A dropped
        connection is resumed with ``Last-Event-ID``; pass ``last_event_id``
        to resume an earlier iteration. Yields nothing when the server says
        the stream was already read to its end.
        """
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                resp = self._pooled().get(
                    self.base_url + "/api/v1/tasks/%s/events" % _seg(task_id),
                    headers=headers,
                    stream=True,
                    timeout=(self.timeout, 60),
                    verify=self._verify,
                )
            except requests.RequestException as exc:
                failures += 1
                if failures >= 5:
                    raise ConnectionFailed("cannot reach %s: %s" % (self.base_url, exc)) from exc
                time.sleep(failures)
                continue
            with resp:
                if resp.status_code == 204:
                    return
                if resp.status_code >= 400:
                    raise error_for(resp.status_code, _error_body(resp))
                failures = 0
                try:
                    for event in _parse_sse(resp.iter_lines(decode_unicode=True)):
                        if event["id"] is not None:
                            last_event_id = event["id"]
                        yield event
                        if event["type"] == "finished":
                            return
                except requests.RequestException:
                    pass
            failures += 1
            if failures >= 5:
                raise ConnectionFailed("the event stream of %s keeps dropping" % task_id)
            time.sleep(0.5)

    def wait_with_watch(self, task_id: str) -> Json:
        """Like :meth:`wait_for_completion`, fed by the live stream instead of polling."""
        for event in self.watch(task_id):
            if event["type"] == "finished":
                _raise_unless_completed(event["data"])
                return event["data"]
        task = self.get_task(task_id)
        _raise_unless_completed(task)
        return task

    # -- scheduled tasks ----------------------------------------------------

    def create_scheduled_task(
        self,
        name: str,
        cron_expr: str,
        task_config: Json,
        description: Optional[str] = None,
        timezone: Optional[str] = None,
        enabled: Optional[bool] = None,
        overlap_policy: Optional[str] = None,
        timeout_seconds: Optional[int] = None,
        starting_deadline_seconds: Optional[int] = None,
    ) -> Json:
        """Creates a scheduled task; ``task_config`` is a task create body (camelCase)."""
        body = _camel(
            dict(
                name=name,
                cron_expr=cron_expr,
                task_config=task_config,
                description=description,
                timezone=timezone,
                enabled=enabled,
                overlap_policy=overlap_policy,
                timeout_seconds=timeout_seconds,
                starting_deadline_seconds=starting_deadline_seconds,
            ),
            _SCHEDULE_FIELDS,
        )
        return self._request("POST", "/api/v1/scheduled-tasks", json=body)

    def list_scheduled_tasks(self, limit: int = 10, offset: int = 0) -> Json:
        """A page of scheduled tasks: ``{tasks, total, limit, offset}``."""
        return self._request("GET", "/api/v1/scheduled-tasks", params={"limit": limit, "offset": offset})

    def get_scheduled_task(self, scheduled_task_id: str) -> Json:
        """One scheduled task."""
        return self._request("GET", "/api/v1/scheduled-tasks/%s" % _seg(scheduled_task_id))

    def update_scheduled_task(
        self, scheduled_task_id: str, clear_from_workload: bool = False, **fields: Any
    ) -> Json:
        """Changes the given fields (snake_case or camelCase); ``task_config``
        fields merge into the stored ones; ``clear_from_workload=True`` sends
        ``taskConfig.fromWorkload: null`` (the tasks stop taking images and
        nodes from a workload). Returns the updated object."""
        body = _camel(fields, _SCHEDULE_FIELDS)
        if clear_from_workload:
            body["taskConfig"] = dict(body.get("taskConfig") or {}, fromWorkload=None)
        return self._request("PUT", "/api/v1/scheduled-tasks/%s" % _seg(scheduled_task_id), json=body)

    def delete_scheduled_task(self, scheduled_task_id: str) -> Json:
        """Deletes a scheduled task."""
        return self._request("DELETE", "/api/v1/scheduled-tasks/%s" % _seg(scheduled_task_id))

    def enable_scheduled_task(self, scheduled_task_id: str) -> Json:
        """Enables a scheduled task."""
        return self._request("PUT", "/api/v1/scheduled-tasks/%s/enable" % _seg(scheduled_task_id))

    def disable_scheduled_task(self, scheduled_task_id: str) -> Json:
        """Disables a scheduled task."""
        return self._request("PUT", "/api/v1/scheduled-tasks/%s/disable" % _seg(scheduled_task_id))

    def trigger_scheduled_task(self, scheduled_task_id: str) -> Json:
        """Runs a scheduled task now; the answer's ``taskId`` is the new task."""
        return self._request("POST", "/api/v1/scheduled-tasks/%s/trigger" % _seg(scheduled_task_id))

    def list_executions(self, scheduled_task_id: str, limit: int = 10, offset: int = 0) -> Json:
        """A page of a scheduled task's executions, newest first."""
        return self._request(
            "GET",
            "/api/v1/scheduled-tasks/%s/executions" % _seg(scheduled_task_id),
            params={"limit": limit, "offset": offset},
        )

    def get_execution(self, scheduled_task_id: str, execution_id: Any) -> Json:
        """One execution of a scheduled task."""
        return self._request(
            "GET",
            "/api/v1/scheduled-tasks/%s/executions/%s" % (_seg(scheduled_task_id), _seg(str(execution_id))),
        )

    # -- keep-warm policies ---------------------------------------------------

    def create_keep_warm_policy(self, name: str, images: List[str], **options: Any) -> Json:
        """Keeps ``images`` on every matching node, including nodes that join later.

        ``options`` are the other policy fields, in snake_case (``enabled``,
        ``node_selector``, ``node_names``, ``tolerate_taints``, ``pull_policy``,
        ``image_pull_secrets``, ``batch_size``, ``priority``, ``from_workload``,
        ``remove_taint``). Returns the policy with its ``coverage`` and ``lastRuns``.
        """
        unknown = set(options) - set(_POLICY_FIELDS)
        if unknown:
            raise TypeError("unknown policy option(s): %s" % ", ".join(sorted(unknown)))
        body = _camel(dict(name=name, images=list(images), **options), _POLICY_FIELDS)
        return self._request("POST", "/api/v1/keep-warm", json=body)

    def list_keep_warm_policies(self, limit: int = 10, offset: int = 0) -> Json:
        """A page of keep-warm policies: ``{policies, total, limit, offset}``."""
        return self._request("GET", "/api/v1/keep-warm", params={"limit": limit, "offset": offset})

    def get_keep_warm_policy(self, policy_id: str) -> Json:
        """One policy, with its coverage and last runs."""
        return self._request("GET", "/api/v1/keep-warm/%s" % _seg(policy_id))

    def update_keep_warm_policy(
        self, policy_id: str, clear_from_workload: bool = False, **fields: Any
    ) -> Json:
        """Changes the given fields (snake_case or camelCase); ``remove_taint=""``
        turns gating off; ``clear_from_workload=True`` sends ``fromWorkload: null``
        (the policy stops taking images and nodes from a workload). Returns the
        updated policy."""
        body = _camel(fields, _POLICY_FIELDS)
        if clear_from_workload:
            body["fromWorkload"] = None
        return self._request("PUT", "/api/v1/keep-warm/%s" % _seg(policy_id), json=body)

    def delete_keep_warm_policy(self, policy_id: str) -> Json:
        """Deletes a policy (a run still going finishes)."""
        return self._request("DELETE", "/api/v1/keep-warm/%s" % _seg(policy_id))

    def enable_keep_warm_policy(self, policy_id: str) -> Json:
        """Enables a policy; returns it."""
        return self._request("PUT", "/api/v1/keep-warm/%s/enable" % _seg(policy_id))

    def disable_keep_warm_policy(self, policy_id: str) -> Json:
        """Disables a policy; returns it."""
        return self._request("PUT", "/api/v1/keep-warm/%s/disable" % _seg(policy_id))


#: The original design's name for the client.
ImagePrewarmClient = PrewarmClient


def _raise_unless_completed(task: Json) -> None:
    status = task.get("status")
    if status == "failed":
        raise TaskFailed(task)
    if status == "cancelled":
        raise TaskCancelled(task)


def _seg(value: str) -> str:
    return requests.utils.quote(str(value), safe="")


def _error_body(resp: requests.Response) -> Json:
    try:
        body = resp.json()
        if isinstance(body, dict):
            return body
    except ValueError:
        pass
    return {"error": resp.reason or "HTTP %d" % resp.status_code, "details": resp.text[:500] or None}


def _parse_sse(lines: Iterator[str]) -> Iterator[TaskEvent]:
    """Events of a ``text/event-stream`` body, given line by line."""
    import json

    event: Optional[str] = None
    event_id: Optional[str] = None
    data: List[str] = []
    for line in lines:
        if line is None:
            continue
        if line == "":
            if data or event:
                yield TaskEvent(type=event or "message", data=json.loads("\n".join(data)) if data else {}, id=event_id)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
