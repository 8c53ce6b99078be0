"""kube-sim seen through a second real client: the Python `kubernetes` package.

Needs KUBECONFIG (a cluster with kube-sim running) and SIM_NODE (one of its
nodes, with nginx:latest preloaded). Run by `cargo test -p kube-sim`
(tests/cluster.rs), or by hand:

    KUBECONFIG=... SIM_NODE=node-0 python3 -m pytest -q crates/kube-sim/tests/python
"""

import os
import uuid

import pytest
from kubernetes import client, config, watch

NODE = os.environ.get("SIM_NODE", "node-0")


@pytest.fixture(scope="module")
def api_client():
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    return client.ApiClient()


def test_lists_the_simulated_node_ready(api_client):
    nodes = client.CoreV1Api(api_client).list_node().items
    node = next(n for n in nodes if n.metadata.name == NODE)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert node.status.node_info.kubelet_version == "v1.20.2"
    names = [name for image in node.status.images for name in image.names]
    assert "docker.io/library/nginx:latest" in names


def test_job_pinned_to_the_node_completes(api_client):
    batch = client.BatchV1Api(api_client)
    name = f"py-{uuid.uuid4().hex[:8]}"
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    node_name=NODE,
                    restart_policy="Never",
                    containers=[
                        client.V1Container(name="warm", image="nginx:latest", image_pull_policy="IfNotPresent"),
                        client.V1Container(name="pull", image="quay.io/example/tool:2"),
                    ],
                )
            ),
        ),
    )
    batch.create_namespaced_job("default", job)
    try:
        succeeded = False
        w = watch.Watch()
        for event in w.stream(
            batch.list_namespaced_job,
            "default",
            field_selector=f"metadata.name={name}",
            timeout_seconds=60,
        ):
            status = event["object"].status
            if status.succeeded:
                succeeded = True
                w.stop()
        assert succeeded, "job did not complete within 60 s"
        pods = client.CoreV1Api(api_client).list_namespaced_pod("default", label_selector=f"job-name={name}").items
        assert len(pods) == 1
        pod = pods[0]
        assert pod.status.phase == "Succeeded"
        ids = {c.name: c.image_id for c in pod.status.container_statuses}
        assert ids["pull"].startswith("quay.io/example/tool@sha256:")
    finally:
        batch.delete_namespaced_job(name, "default", propagation_policy="Background")
