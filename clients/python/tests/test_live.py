"""The SDK against a running service with simulated nodes.

Needs ``PREWARM_SERVER`` (the service) and ``PREWARM_TEST_SELECTOR``
(``key=value`` of this suite's nodes, all of which pull
``registry.example.com/missing/*`` with an error and ``slow/*`` slowly).
The Rust test ``sdk_suites_pass_against_the_live_service`` sets them up.
"""

import os
import threading
import time

import pytest

from prewarm_client import (
    Conflict,
    ImagePrewarmClient,
    PrewarmClient,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TimeoutError,
    ValidationError,
)

SERVER = os.environ.get("PREWARM_SERVER")
pytestmark = pytest.mark.skipif(not SERVER, reason="PREWARM_SERVER not set")


def selector():
    key, _, value = os.environ.get("PREWARM_TEST_SELECTOR", "suite=sdk").partition("=")
    return {key: value}


@pytest.fixture
def client():
    return PrewarmClient(SERVER, token=os.environ.get("PREWARM_TOKEN"))


def test_original_example_runs_to_completion():
    client = ImagePrewarmClient(SERVER)
    task = client.create_task(images=["nginx:1.25", "redis:7"], batch_size=10, node_selector=selector())
    assert task["status"] == "pending" and task["message"] == "Task created successfully"
    result = client.wait_for_completion(task["taskId"], timeout=120, poll_interval=0.5)
    progress = result["progress"]
    assert result["status"] == "completed"
    assert progress["completedNodes"] == progress["totalNodes"] > 0
    assert progress["percentage"] == 100.0


def test_watch_streams_progress_then_finished(client):
    task = client.create_task(["python-watch/app:1"], batch_size=2, node_selector=selector())
    events = list(client.watch(task["taskId"]))
    assert events[-1]["type"] == "finished"
    assert events[-1]["data"]["status"] == "completed"
    assert all(e["type"] == "progress" for e in events[:-1])
    assert any(e["type"] == "progress" for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids), ids
    # Resuming after the end yields nothing more.
    assert list(client.watch(task["taskId"], last_event_id=events[-1]["id"])) == []
    # An ended task: one finished message.
    again = list(client.watch(task["taskId"]))
    assert [e["type"] for e in again] == ["finished"]


def test_failed_task_raises_task_failed_with_nodes(client):
    task = client.create_task(
        ["registry.example.com/missing/python:1"], node_selector=selector(), max_retries=0
    )
    with pytest.raises(TaskFailed) as info:
        client.wait_for_completion(task["taskId"], timeout=120, poll_interval=0.5)
    failed_task = info.value.task
    assert failed_task["status"] == "failed"
    assert failed_task["failedNodeDetails"]
    assert "failed nodes" in str(info.value)
    # Every (node, image) result, one per page: the failed ones are all there.
    results = list(client.iter_task_nodes(task["taskId"], page_size=1))
    assert len(results) == failed_task["progress"]["totalNodes"]
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == failed_task["failedNodeDetailsTotal"] > 0
    assert [r["nodeName"] for r in results] == sorted(r["nodeName"] for r in results)
    page = client.list_task_nodes(task["taskId"], status="failed", limit=1)
    assert page["total"] == len(failed) and len(page["nodes"]) == 1
    with pytest.raises(ValidationError):
        client.list_task_nodes(task["taskId"], status="done")
    with pytest.raises(TaskFailed):
        client.wait_with_watch(task["taskId"])


def test_cancel_and_conflict(client):
    task = client.create_task(["slow/python-cancel:1"], node_selector=selector())
    answer = client.cancel_task(task["taskId"])
    assert answer == {"taskId": task["taskId"], "status": "cancelled", "message": answer["message"]}
    with pytest.raises(Conflict) as info:
        client.cancel_task(task["taskId"])
    assert info.value.body["status"] == "cancelled"
    with pytest.raises(TaskCancelled):
        client.wait_for_completion(task["taskId"], timeout=30, poll_interval=0.2)


def test_watch_sees_a_cancel_from_elsewhere(client):
    task = client.create_task(["slow/python-watch-cancel:1"], batch_size=1, node_selector=selector())
    timer = threading.Timer(1.0, client.cancel_task, args=(task["taskId"],))
    timer.start()
    try:
        events = list(client.watch(task["taskId"]))
    finally:
        timer.cancel()
    assert events[-1]["type"] == "finished"
    assert events[-1]["data"]["status"] == "cancelled"


def test_wait_times_out(client):
    task = client.create_task(["slow/python-timeout:1"], batch_size=1, node_selector=selector())
    try:
        with pytest.raises(TimeoutError):
            client.wait_for_completion(task["taskId"], timeout=1, poll_interval=0.2)
    finally:
        client.cancel_task(task["taskId"])


def test_typed_errors_carry_the_api_body(client):
    with pytest.raises(TaskNotFound) as info:
        client.get_task("task-20200101-nosuch")
    assert info.value.body["taskId"] == "task-20200101-nosuch"
    with pytest.raises(ValidationError) as info:
        client.create_task(["nginx::bad"])
    assert "images[0]" in info.value.details
    with pytest.raises(ValidationError):
        client.list_tasks(status="done")


def test_list_filters_and_pages(client):
    page = client.list_tasks(status="completed", limit=2)
    assert page["limit"] == 2 and page["offset"] == 0
    assert all(t["status"] == "completed" for t in page["tasks"])
    assert len(page["tasks"]) <= 2


def schedules_available(client):
    try:
        client.list_scheduled_tasks()
        return True
    except TaskNotFound as err:
        if err.error == "Not found":  # no such route: the server predates scheduled tasks
            return False
        raise


def test_scheduled_task_lifecycle(client):
    if not schedules_available(client):
        pytest.skip("this server has no /api/v1/scheduled-tasks")
    created = client.create_scheduled_task(
        name="python-sdk",
        cron_expr="0 3 * * *",
        task_config={"images": ["nginx:1.25"], "nodeSelector": selector()},
        overlap_policy="skip",
    )
    sid = created["id"]
    try:
        assert created["enabled"] is True and created["nextExecutionAt"]
        assert client.get_scheduled_task(sid)["name"] == "python-sdk"
        updated = client.update_scheduled_task(sid, description="nightly", task_config={"batchSize": 3})
        assert updated["description"] == "nightly"
        assert updated["taskConfig"]["batchSize"] == 3
        assert updated["taskConfig"]["images"] == ["nginx:1.25"]
        assert client.disable_scheduled_task(sid)["status"] == "success"
        assert client.get_scheduled_task(sid)["nextExecutionAt"] is None
        assert client.enable_scheduled_task(sid)["status"] == "success"
        triggered = client.trigger_scheduled_task(sid)
        client.wait_for_completion(triggered["taskId"], timeout=120, poll_interval=0.5)
        executions = client.list_executions(sid)
        assert executions["total"] >= 1
        first = executions["executions"][0]
        assert first["taskId"] == triggered["taskId"]
        assert client.get_execution(sid, first["id"])["scheduledTaskId"] == sid
        assert any(s["id"] == sid for s in client.list_scheduled_tasks(limit=100)["tasks"])
    finally:
        client.delete_scheduled_task(sid)
    with pytest.raises(TaskNotFound):
        client.get_scheduled_task(sid)


def test_plan_creates_nothing_and_coverage_follows_a_run(client):
    image = "python-plan/app:1"
    before = client.list_tasks(limit=1)["total"]
    plan = client.plan_task([image], batch_size=4, node_selector=selector())
    assert plan["dryRun"] is True
    assert plan["selectedNodes"] == plan["jobs"] > 0
    assert plan["images"] == [{"image": image, "nodesWithImage": 0, "pullsNeeded": plan["jobs"]}]
    assert client.list_tasks(limit=1)["total"] == before
    cold = client.coverage([image], node_selector=selector())
    assert cold["totalNodes"] == plan["selectedNodes"] and cold["percentage"] == 0.0
    task = client.create_task([image], batch_size=4, node_selector=selector())
    done = client.wait_for_completion(task["taskId"], timeout=120, poll_interval=0.5)
    assert done["progress"]["totalNodes"] == plan["selectedNodes"]
    deadline = time.monotonic() + 30
    while client.coverage([image], node_selector=selector())["percentage"] != 100.0:
        assert time.monotonic() < deadline, "coverage never reached 100%"
        time.sleep(0.2)
    # Every node of the run has a learned pull speed, listed slowest first.
    while client.node_stats(limit=1000)["total"] < plan["selectedNodes"]:
        assert time.monotonic() < deadline, "the run's nodes were not learned"
        time.sleep(0.2)
    speeds = [n["secondsPerPull"] for n in client.node_stats(limit=1000)["nodes"]]
    assert speeds == sorted(speeds, reverse=True) and speeds[-1] > 0


def test_keep_warm_policy_warms_its_nodes_and_is_managed(client):
    image = "python-keep/app:1"
    policy = client.create_keep_warm_policy("python-sdk", [image], node_selector=selector(), batch_size=4)
    pid = policy["id"]
    try:
        assert policy["enabled"] is True and policy["images"] == [image]
        deadline = time.monotonic() + 60
        while True:
            current = client.get_keep_warm_policy(pid)
            coverage = current["coverage"]
            if coverage["totalNodes"] > 0 and coverage["warmNodes"] == coverage["totalNodes"]:
                break
            assert time.monotonic() < deadline, "policy never warmed its nodes: %r" % current
            time.sleep(0.2)
        run = current["lastRuns"][-1]
        assert client.get_task(run["taskId"])["trigger"] == "keep-warm"
        assert client.disable_keep_warm_policy(pid)["enabled"] is False
        assert client.update_keep_warm_policy(pid, batch_size=2)["batchSize"] == 2
        assert any(p["id"] == pid for p in client.list_keep_warm_policies(limit=100)["policies"])
        with pytest.raises(ValidationError):
            client.update_keep_warm_policy(pid, images=[])
    finally:
        client.delete_keep_warm_policy(pid)
    with pytest.raises(TaskNotFound):
        client.get_keep_warm_policy(pid)
