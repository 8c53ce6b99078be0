//! kube-sim against a real kube-apiserver, observed with real clients (kubectl,
//! the Python `kubernetes` package). One control plane for the whole binary;
//! each test runs its own kube-sim with its own node name prefix.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_sim::testing::{repo_root, LocalCluster, Sim};
use serde_json::Value;

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl at /usr/bin/kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out) = kubectl(kubeconfig, args, stdin);
    assert!(ok, "kubectl {args:?} failed: {out}");
    out
}

fn kubectl_json(kubeconfig: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(kubeconfig, &all, None)).unwrap()
}

/// Polls `check` every 200 ms until it returns `Some` or `timeout` passes.
fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn job(name: &str, node: &str, images: &[&str], extra_pod_spec: &str) -> String {
    let containers: String = images
        .iter()
        .enumerate()
        .map(|(i, image)| format!("      - {{name: c{i}, image: \"{image}\", command: [/noop]}}\n"))
        .collect();
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  template:
    spec:
      nodeName: {node}
      restartPolicy: Never
{extra_pod_spec}      containers:
{containers}"
    )
}

/// The pods of a Job, as JSON.
fn job_pods(kubeconfig: &Path, job: &str) -> Vec<Value> {
    let list = kubectl_json(
        kubeconfig,
        &["get", "pods", "-l", &format!("job-name={job}")],
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

fn waiting_reason(pod: &Value) -> Option<String> {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_string)
}

fn node<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("node {name} not listed"))
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn nodes_are_listed_like_kubelet_nodes() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let sim = Sim::start(
        kc,
        r#"
nodes:
  - namePrefix: reg-
    count: 3
    labels: {workload: compute}
  - names: [reg-gpu-0]
    labels: {workload: gpu}
    taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]
  - names: [reg-cordoned-0]
    unschedulable: true
  - names: [reg-down-0]
    ready: false
preloaded:
  - image: nginx:latest
"#,
    );
    assert_eq!(sim.nodes(), 6);
    let nodes = kubectl_json(kc, &["get", "nodes"]);
    for name in ["reg-0", "reg-1", "reg-2"] {
        let n = node(&nodes, name);
        assert_eq!(ready_status(n), "True");
        assert_eq!(n["metadata"]["labels"]["workload"], "compute");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], name);
        assert!(n["spec"]["taints"].is_null(), "{name}: {}", n["spec"]);
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.20.2");
        assert_eq!(n["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(n["status"]["allocatable"]["pods"], "110");
        assert_eq!(
            n["status"]["images"][0]["names"][1],
            "docker.io/library/nginx:latest"
        );
    }
    let gpu = node(&nodes, "reg-gpu-0");
    assert_eq!(gpu["metadata"]["labels"]["workload"], "gpu");
    assert_eq!(
        gpu["spec"]["taints"],
        serde_json::json!([{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}])
    );
    assert_eq!(
        node(&nodes, "reg-cordoned-0")["spec"]["unschedulable"],
        true
    );
    let down = node(&nodes, "reg-down-0");
    assert_eq!(ready_status(down), "False");
    assert_eq!(
        down["spec"]["taints"][0]["key"],
        "node.kubernetes.io/not-ready"
    );
    let table = kubectl_ok(kc, &["get", "nodes"], None);
    assert!(
        table.contains("reg-cordoned-0   Ready,SchedulingDisabled"),
        "{table}"
    );

    drop(sim);
    let nodes = kubectl_json(kc, &["get", "nodes"]);
    let left: Vec<_> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["metadata"]["name"].as_str().unwrap().starts_with("reg-"))
        .collect();
    assert!(left.is_empty(), "--cleanup left nodes behind");
}

const JOBS_SCENARIO: &str = r#"
timeScale: 0.01
nodes:
  - namePrefix: jobs-
    count: 2
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "flaky/*"
    failTimes: 2
  - match: "slow/*"
    pullSeconds: 6000
preloaded:
  - image: nginx:latest
"#;

#[test]
fn job_with_preloaded_image_completes_and_node_lists_pulled_images() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(kc, JOBS_SCENARIO);
    let spec = job("preloaded", "jobs-0", &["nginx:latest", "busybox:1.36"], "");
    kubectl_ok(kc, &["create", "-f", "-"], Some(&spec));
    kubectl_ok(
        kc,
        &[
            "wait",
            "--for=condition=complete",
            "job/preloaded",
            "--timeout=60s",
        ],
        None,
    );
    let pod = &job_pods(kc, "preloaded")[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert!(pod["status"]["hostIP"].is_string() && pod["status"]["podIP"].is_string());
    assert!(pod["status"]["startTime"].is_string());
    let c = &pod["status"]["containerStatuses"][1];
    assert_eq!(c["state"]["terminated"]["exitCode"], 0);
    let image_id = c["imageID"].as_str().unwrap();
    let hex = image_id
        .strip_prefix("docker.io/library/busybox@sha256:")
        .unwrap_or_else(|| panic!("imageID {image_id}"));
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{image_id}"
    );
    // The pulled image shows up on the node (writes are coalesced per second).
    eventually(Duration::from_secs(10), "busybox in node images", || {
        let n = kubectl_json(kc, &["get", "node", "jobs-0"]);
        let names = &n["status"]["images"][0]["names"];
        (names[0] == image_id && names[1] == "docker.io/library/busybox:1.36").then_some(())
    });
    kubectl_ok(
        kc,
        &["delete", "job", "preloaded", "--cascade=background"],
        None,
    );
}

#[test]
fn failing_pull_shows_err_image_pull_then_backoff() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    // timeScale 2: ErrImagePull shows for 2 s (at 2-4 s, again at 24-26 s, …),
    // long enough for kubectl polling on a busy machine.
    let _sim = Sim::start(
        kc,
        r#"
timeScale: 2
nodes: [{namePrefix: fail-, count: 1}]
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
"#,
    );
    let image = "registry.example.com/missing/app:1";
    kubectl_ok(
        kc,
        &["create", "-f", "-"],
        Some(&job("failing", "fail-0", &[image], "")),
    );
    let mut seen = Vec::<String>::new();
    eventually(
        Duration::from_secs(60),
        "ErrImagePull then ImagePullBackOff",
        || {
            let pods = job_pods(kc, "failing");
            let pod = pods.first()?;
            let reason = waiting_reason(pod)?;
            if seen.last() != Some(&reason) {
                seen.push(reason.clone());
            }
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            match reason.as_str() {
                "ErrImagePull" => {
                    assert_eq!(
                        waiting["message"],
                        "rpc error: code = NotFound desc = failed to pull and unpack image \
                     \"registry.example.com/missing/app:1\": failed to resolve reference \
                     \"registry.example.com/missing/app:1\": manifest unknown"
                    );
                    None
                }
                "ImagePullBackOff" if seen.contains(&"ErrImagePull".to_string()) => {
                    assert_eq!(
                        waiting["message"],
                        format!("Back-off pulling image \"{image}\"")
                    );
                    assert_eq!(pod["status"]["phase"], "Pending");
                    Some(())
                }
                _ => None,
            }
        },
    );
    assert_eq!(seen.last().map(String::as_str), Some("ImagePullBackOff"));

    // Deleting the Job in the background removes its pod (kube-sim finishes the deletion).
    kubectl_ok(
        kc,
        &["delete", "job", "failing", "--cascade=background"],
        None,
    );
    eventually(Duration::from_secs(30), "pod of deleted job gone", || {
        job_pods(kc, "failing").is_empty().then_some(())
    });
}

#[test]
fn flaky_image_succeeds_on_the_kubelets_own_retry() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(kc, &JOBS_SCENARIO.replace("jobs-", "flaky-"));
    // restartPolicy Never, one pod: two failed pulls, then the retry under backoff pulls.
    kubectl_ok(
        kc,
        &["create", "-f", "-"],
        Some(&job("flaky", "flaky-1", &["flaky/app:1"], "")),
    );
    kubectl_ok(
        kc,
        &[
            "wait",
            "--for=condition=complete",
            "job/flaky",
            "--timeout=60s",
        ],
        None,
    );
    let pods = job_pods(kc, "flaky");
    assert_eq!(pods.len(), 1, "one pod, retried in place");
    assert_eq!(pods[0]["status"]["phase"], "Succeeded");
}

#[test]
fn invalid_image_name_is_reported() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(kc, &JOBS_SCENARIO.replace("jobs-", "invalid-"));
    kubectl_ok(
        kc,
        &["create", "-f", "-"],
        Some(&job("invalid", "invalid-0", &["Bad:Image"], "")),
    );
    let pod = eventually(Duration::from_secs(30), "InvalidImageName", || {
        let pods = job_pods(kc, "invalid");
        let pod = pods.first()?;
        (waiting_reason(pod)? == "InvalidImageName").then(|| pod.clone())
    });
    let msg = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"];
    assert_eq!(
        msg,
        "Failed to apply default image tag \"Bad:Image\": couldn't parse image reference \
         \"Bad:Image\": invalid reference format: repository name must be lowercase"
    );
    kubectl_ok(
        kc,
        &["delete", "job", "invalid", "--cascade=background"],
        None,
    );
}

#[test]
fn active_deadline_fails_the_pod() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(kc, &JOBS_SCENARIO.replace("jobs-", "deadline-"));
    let spec = job(
        "deadline",
        "deadline-0",
        &["slow/model:1"],
        "      activeDeadlineSeconds: 2\n",
    );
    kubectl_ok(kc, &["create", "-f", "-"], Some(&spec));
    let pod = eventually(Duration::from_secs(30), "pod Failed", || {
        let pods = job_pods(kc, "deadline");
        let pod = pods.first()?;
        (pod["status"]["phase"] == "Failed").then(|| pod.clone())
    });
    assert_eq!(pod["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        pod["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    // The Job controller sees it too.
    kubectl_ok(
        kc,
        &[
            "wait",
            "--for=condition=failed",
            "job/deadline",
            "--timeout=30s",
        ],
        None,
    );
    kubectl_ok(
        kc,
        &["delete", "job", "deadline", "--cascade=background"],
        None,
    );
}

#[test]
fn scenario_events_delete_nodes_and_flip_ready() {
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(
        kc,
        r#"
nodes:
  - names: [ev-keep-0, ev-gone-0, ev-gone-1, ev-flip-0]
events:
  - after: 1s
    deleteNodes: "ev-gone-*"
  - after: 1500ms
    setReady: {nodes: "ev-flip-0", ready: false}
"#,
    );
    eventually(Duration::from_secs(30), "events applied", || {
        let nodes = kubectl_json(kc, &["get", "nodes"]);
        let names: Vec<&str> = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .filter(|n| n.starts_with("ev-"))
            .collect();
        let flipped = ready_status(node(&nodes, "ev-flip-0")) == "False";
        (names == ["ev-flip-0", "ev-keep-0"] && flipped).then_some(())
    });
    let nodes = kubectl_json(kc, &["get", "nodes"]);
    assert_eq!(ready_status(node(&nodes, "ev-keep-0")), "True");
}

#[test]
fn python_kubernetes_client_sees_a_job_complete() {
    let importable = Command::new("python3")
        .args(["-c", "import kubernetes, pytest"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        eprintln!(
            "SKIPPED: python3 modules kubernetes/pytest missing (pip install kubernetes pytest)"
        );
        return;
    }
    let cluster = LocalCluster::shared();
    let kc = cluster.kubeconfig_path();
    let _sim = Sim::start(
        kc,
        "timeScale: 0.01\nnodes: [{namePrefix: py-, count: 2}]\npreloaded: [{image: nginx:latest}]\n",
    );
    let test = repo_root().join("crates/kube-sim/tests/python/test_python_client.py");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&test)
        .env("KUBECONFIG", kc)
        .env("SIM_NODE", "py-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pytest failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
