"""Parts of the SDK that need no live service: SSE parsing, error mapping,
connection pooling."""

import http.server
import json
import threading

import pytest

import prewarm_client
from prewarm_client.client import _TASK_FIELDS, _camel, _parse_sse
from prewarm_client.errors import error_for


def test_sse_parser_reads_events_ids_and_skips_comments():
    lines = iter([
        ": keep-alive", "",
        "event: progress", "id: 5", 'data: {"totalNodes": 3, "status": "running"}', "",
        "event: finished", "id: 15", 'data: {"taskId": "t",', 'data:  "status": "completed"}', "",
    ])
    events = list(_parse_sse(lines))
    assert [e["type"] for e in events] == ["progress", "finished"]
    assert events[0]["id"] == "5" and events[0]["data"]["totalNodes"] == 3
    assert events[1]["data"] == {"taskId": "t", "status": "completed"}


@pytest.mark.parametrize("code,cls", [
    (400, prewarm_client.ValidationError),
    (401, prewarm_client.Unauthorized),
    (403, prewarm_client.Unauthorized),
    (404, prewarm_client.TaskNotFound),
    (409, prewarm_client.Conflict),
    (500, prewarm_client.APIError),
])
def test_errors_are_typed_and_carry_the_body(code, cls):
    err = error_for(code, {"error": "Boom", "details": "what exactly"})
    assert type(err) is cls
    assert err.status_code == code and err.body["details"] == "what exactly"
    assert "Boom: what exactly" in str(err)


def test_original_name_and_timeout_error_compatibility():
    assert prewarm_client.ImagePrewarmClient is prewarm_client.PrewarmClient
    assert issubclass(prewarm_client.TimeoutError, TimeoutError)
    assert issubclass(prewarm_client.TaskCancelled, prewarm_client.TaskFailed)


def test_unreachable_server_raises_connection_failed():
    client = prewarm_client.PrewarmClient("http://127.0.0.1:1", timeout=2)
    with pytest.raises(prewarm_client.ConnectionFailed):
        client.list_tasks()


def test_unknown_create_option_is_a_type_error():
    client = prewarm_client.PrewarmClient("http://127.0.0.1:1")
    with pytest.raises(TypeError):
        client.create_task(["nginx"], batchsize=3)


def test_task_options_are_sent_in_camel_case():
    body = _camel(dict(images=["nginx"], pin_digests=True, tolerate_taints=None), _TASK_FIELDS)
    assert body == {"images": ["nginx"], "pinDigests": True}
    body = _camel(dict(images=["nginx"], registry_pull_rate={"ghcr.io": "600/1m"}), _TASK_FIELDS)
    assert body == {"images": ["nginx"], "registryPullRate": {"ghcr.io": "600/1m"}}


def test_updates_can_clear_from_workload(monkeypatch):
    client = prewarm_client.PrewarmClient("http://127.0.0.1:1")
    sent = []
    monkeypatch.setattr(client, "_request", lambda method, path, json=None: sent.append(json) or {})
    client.update_keep_warm_policy("p", images=["nginx"], clear_from_workload=True)
    client.update_keep_warm_policy("p", images=["nginx"])
    client.update_scheduled_task("s", task_config={"batchSize": 2}, clear_from_workload=True)
    assert sent == [
        {"images": ["nginx"], "fromWorkload": None},
        {"images": ["nginx"]},
        {"taskConfig": {"batchSize": 2, "fromWorkload": None}},
    ]


def test_ca_bundle_comes_from_the_argument_or_the_environment(tmp_path, monkeypatch):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.delenv("PREWARM_CA_CERT", raising=False)
    assert prewarm_client.PrewarmClient("https://p").session.verify is True
    client = prewarm_client.PrewarmClient("https://p", ca_cert=str(bundle))
    assert client.session.verify == str(bundle)
    monkeypatch.setenv("PREWARM_CA_CERT", str(bundle))
    assert prewarm_client.PrewarmClient("https://p").session.verify == str(bundle)
    with pytest.raises(ValueError):
        prewarm_client.PrewarmClient("https://p", ca_cert=str(tmp_path / "missing.pem"))


def test_a_connection_idle_longer_than_the_pool_timeout_is_not_reused(monkeypatch):
    peers = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            peers.append(self.client_address)
            body = json.dumps({"tasks": [], "total": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import prewarm_client.client as module
        clock = [1000.0]
        monkeypatch.setattr(module, "_monotonic", lambda: clock[0])
        client = prewarm_client.PrewarmClient("http://127.0.0.1:%d" % server.server_port)
        client.list_tasks()
        clock[0] += module.POOL_IDLE_TIMEOUT - 1
        client.list_tasks()
        assert peers[0] == peers[1], "a briefly idle connection is reused"
        clock[0] += module.POOL_IDLE_TIMEOUT + 1
        client.list_tasks()
        assert peers[2] != peers[1], "a long-idle connection was reused"
    finally:
        server.shutdown()
        server.server_close()
