//! End to end on a real node: kubelet 1.20 + containerd + two registries on
//! loopback (`scripts/real-node.sh`), beside kube-sim nodes, with the real
//! `prewarm` binary. What the kubelet really reports (messages, image ids,
//! `node.status.images`) is what these tests assert.
//!
//! The real node needs root and takes a host-wide slot, so these tests are
//! `#[ignore]`d in a plain `cargo test` and run by the real-node group of
//! `scripts/test.sh`: `cargo test -p prewarm --test real_node -- --ignored`.
//! They never use `kubectl logs/exec/port-forward/attach` (those dial the node).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// The real node's coordinates, from the last lines of `real-node.sh up`.
struct RealNode {
    node: String,
    registry: String,
    auth_registry: String,
    auth_user: String,
    containerd: String,
}

static REAL: OnceLock<RealNode> = OnceLock::new();

/// The real node of this test binary's control plane, started on first use.
/// `local-cluster.sh down` (run by the cluster's watchdog once this process
/// exits) takes it down first and puts the host back as it was.
fn real_node() -> &'static RealNode {
    REAL.get_or_init(|| {
        let cluster = cluster();
        let stdout = run(Command::new("bash")
            .arg(kube_sim::testing::repo_root().join("scripts/real-node.sh"))
            .arg("up")
            .env("LOCAL_CLUSTER_DIR", cluster.state_dir()));
        let vars: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
        RealNode {
            node: vars["NODE"].to_owned(),
            registry: vars["REGISTRY"].to_owned(),
            auth_registry: vars["AUTH_REGISTRY"].to_owned(),
            auth_user: vars["AUTH_USER"].to_owned(),
            containerd: vars["CONTAINERD"].to_owned(),
        }
    })
}

impl RealNode {
    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry)
    }

    /// The service binary in `namespace`, its helper image from the local registry.
    fn service(&self, namespace: &str) -> (Service, tempfile::TempDir) {
        self.service_flags(namespace, &[])
    }

    /// Like `service`, with extra flags.
    fn service_flags(&self, namespace: &str, extra: &[&str]) -> (Service, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let helper = self.image("prewarm-noop:1");
        let flags: Vec<&str> = ["--helper-image", helper.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let svc = Service::start_with(namespace, &dir.path().join("prewarm.db"), &flags);
        (svc, dir)
    }

    /// The manifest digest the registry serves for `image` (`skopeo inspect`).
    fn registry_digest(&self, image: &str, creds: Option<&str>) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = run(cmd.arg(format!("docker://{image}")));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Digest"].as_str().unwrap().to_owned()
    }

    /// Removes `image` from the node's containerd, so the next pull fetches it again.
    fn remove_image(&self, image: &str) {
        let socket = self.containerd.trim_start_matches("unix://");
        run(Command::new("ctr")
            .args([
                "--address",
                socket,
                "-n",
                "k8s.io",
                "images",
                "rm",
                "--sync",
            ])
            .arg(image));
    }

    /// Containers containerd still has for pods of `namespace`.
    fn containers_of(&self, namespace: &str) -> Vec<String> {
        let socket = self.containerd.trim_start_matches("unix://");
        let filter = format!("labels.\"io.kubernetes.pod.namespace\"=={namespace}");
        run(Command::new("ctr")
            .args([
                "--address",
                socket,
                "-n",
                "k8s.io",
                "containers",
                "ls",
                "-q",
            ])
            .arg(filter))
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

/// Each image's resolved digests, by image.
fn digests_of(task: &prewarm_api::Task) -> BTreeMap<&str, &[String]> {
    task.image_statuses
        .iter()
        .map(|s| (s.image.as_str(), s.digests.as_slice()))
        .collect()
}

async fn create_namespace(name: &str) {
    let api: Api<Namespace> = Api::all(cluster().kube_client().await);
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn task_over_real_and_simulated_nodes_completes_with_registry_digests() {
    let real = real_node();
    let hello = real.image("hello:1");
    let busybox = real.image("busybox:1");
    let hello_digest = real.registry_digest(&hello, None);
    let busybox_digest = real.registry_digest(&busybox, None);
    // The simulated nodes resolve the same digests the registry serves.
    let _sim = sim(&format!(
        r#"
timeScale: 0.1
nodes:
  - namePrefix: mixed-
    count: 3
    labels: {{suite: mixed}}
images:
  - match: "{hello}"
    digest: "{hello_digest}"
  - match: "{busybox}"
    digest: "{busybox_digest}"
"#
    ));
    let (svc, _dir) = real.service("t-mixed");
    let id = svc
        .create(json!({
            "images": [hello, busybox],
            "nodeNames": [real.node, "mixed-0", "mixed-1", "mixed-2"],
            "pullPolicy": "Always"
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 4);
    let digests = digests_of(&task);
    assert_eq!(digests[hello.as_str()], [hello_digest]);
    assert_eq!(digests[busybox.as_str()], [busybox_digest]);
    wait_no_jobs("t-mixed", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn pull_mode_pods_pulls_on_the_real_kubelet_and_leaves_nothing() {
    let real = real_node();
    let hello = real.image("hello:1");
    let busybox = real.image("busybox:1");
    let ns = "t-pods-mode";
    let pods = JobLog::watch_pods(ns).await;
    let jobs = JobLog::watch(ns).await;
    let (svc, _dir) = real.service_flags(ns, &["--pull-mode", "pods"]);
    let id = svc
        .create(json!({
            "images": [hello, busybox],
            "nodeNames": [real.node],
            "pullPolicy": "Always"
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    let digests = digests_of(&task);
    assert_eq!(
        digests[hello.as_str()],
        [real.registry_digest(&hello, None)]
    );
    assert_eq!(
        digests[busybox.as_str()],
        [real.registry_digest(&busybox, None)]
    );
    wait_no_pods(ns, LONG).await;
    eventually("no containers left in containerd", LONG, || {
        let left = real.containers_of(ns);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(pods.created(), 1, "one pull Pod for the node");
    assert_eq!(jobs.created(), 0, "no Job in pods mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn missing_image_fails_with_the_kubelets_not_found_and_is_not_retried() {
    let real = real_node();
    let (svc, _dir) = real.service("t-missing");
    let jobs = JobLog::watch("t-missing").await;
    let missing = real.image("missing:1");
    let id = svc
        .create(json!({
            "images": [missing],
            "nodeNames": [real.node],
            "maxRetries": 3,
            "retryDelay": 0
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "failed", "{task:#?}");
    let d = &task.failed_node_details[0];
    assert_eq!(d.node_name, real.node);
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&d.reason.as_str()),
        "{d:?}"
    );
    assert!(
        d.message.starts_with(&format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{missing}\""
        )),
        "{d:?}"
    );
    assert!(d.message.contains("not found"), "{d:?}");
    // Permanent: one Job, no retries despite maxRetries 3.
    assert_eq!(jobs.created(), 1);
    // A name the kubelet would answer with InvalidImageName never reaches it.
    let bad = format!("{}/Bad:1", real.registry);
    let (code, body) = svc
        .post(json!({"images": [bad], "nodeNames": [real.node]}))
        .await;
    assert_eq!(code, 400, "{body}");
    wait_no_jobs("t-missing", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn private_image_needs_its_pull_secret() {
    let real = real_node();
    let ns = "t-private";
    create_namespace(ns).await;
    let (user, pass) = real.auth_user.split_once(':').unwrap();
    let config =
        json!({"auths": {real.auth_registry.as_str(): {"username": user, "password": pass}}});
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()}
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster().kube_client().await, ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let (svc, _dir) = real.service(ns);
    let jobs = JobLog::watch(ns).await;
    let private = format!("{}/private/hello:1", real.auth_registry);
    // Always: a node that has the image would start it without asking the registry.
    let denied = svc
        .create(json!({"images": [private], "nodeNames": [real.node], "pullPolicy": "Always", "maxRetries": 2, "retryDelay": 0}))
        .await;
    let task = svc.wait_end(&denied, LONG).await;
    assert_eq!(status(&task), "failed", "{task:#?}");
    let d = &task.failed_node_details[0];
    assert!(
        d.message
            .starts_with("rpc error: code = Unknown desc = failed to pull and unpack image"),
        "{d:?}"
    );
    assert!(d.message.contains("401 Unauthorized"), "{d:?}");
    assert_eq!(jobs.created(), 1, "permanent: not retried");

    let allowed = svc
        .create(json!({"images": [private], "nodeNames": [real.node], "pullPolicy": "Always", "imagePullSecrets": ["regcred"]}))
        .await;
    let task = svc.wait_end(&allowed, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    let digest = real.registry_digest(&private, Some(&real.auth_user));
    assert_eq!(task.image_statuses[0].digests, [digest]);
    wait_no_jobs(ns, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn an_image_larger_than_the_real_nodes_disk_is_skipped_before_any_pull() {
    let real = real_node();
    // Not in the registry: had the node been tried, its pull would fail
    // (not found) instead of the node being skipped.
    let huge = real.image("disk-check/huge:1");
    // A simulated node reports the image at 1 PiB, which tells the service its size.
    let _sim = sim(&format!(
        r#"
nodes:
  - names: [disk-peer]
    labels: {{suite: disk-peer}}
images:
  - match: "{huge}"
    sizeBytes: 1125899906842624
preloaded:
  - image: "{huge}"
    nodes: "disk-peer"
"#
    ));
    let ns = "t-real-disk";
    let (svc, _dir) = real.service(ns);
    let pods = JobLog::watch_pods(ns).await;
    let body = json!({"images": [huge], "nodeNames": [real.node]});
    // The size reaches the service with kube-sim's node report: the dry-run
    // plan says when it has (nothing is created by a plan).
    let plan_url = format!("{}/api/v1/tasks?dryRun=true", svc.url);
    let plan = eventually("a plan that skips the real node", LONG, || {
        let (url, body) = (plan_url.clone(), body.clone());
        async move {
            let r = http().post(url).json(&body).send().await.ok()?;
            let plan: serde_json::Value = r.json().await.ok()?;
            (plan["skippedByReason"] == json!({"InsufficientDisk": 1})).then_some(plan)
        }
    })
    .await;
    assert_eq!(plan["jobs"], 0, "{plan}");
    let id = svc.create(body).await;
    let task = svc.wait_end(&id, LONG).await;
    // Its only node skipped, the task has nothing left to do.
    assert_eq!(status(&task), "failed", "{task:#?}");
    assert_eq!(task.reason.as_deref(), Some("NoNodesLeft"), "{task:#?}");
    assert_eq!(task.progress.failed_nodes, 0, "{task:#?}");
    assert_eq!(task.progress.skipped_nodes, 1, "{task:#?}");
    let skipped = &task.skipped_node_details[0];
    assert_eq!(
        (skipped.node_name.as_str(), skipped.reason.as_str()),
        (real.node.as_str(), "InsufficientDisk")
    );
    // The room it counted is what the real kubelet reports: its allocatable
    // ephemeral-storage (less the images it lists).
    let nodes: Api<Node> = Api::all(cluster().kube_client().await);
    let node = nodes.get(&real.node).await.unwrap();
    let allocatable = &node.status.unwrap().allocatable.unwrap()["ephemeral-storage"];
    let bytes = kube_quantity::ParsedQuantity::try_from(allocatable)
        .unwrap()
        .to_bytes_u64()
        .unwrap();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let counted = format!("allocatable ephemeral-storage {gib:.2} GiB - images ");
    assert!(
        skipped.message.contains(&counted),
        "{} (node: {allocatable:?})",
        skipped.message
    );
    assert_eq!(pods.created(), 0, "no pull on a node short of room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn if_not_present_skips_a_node_that_lists_the_image() {
    let real = real_node();
    let ns = "t-present";
    let (svc, _dir) = real.service(ns);
    let jobs = JobLog::watch(ns).await;
    // busybox under its own tag: no other test pulls it.
    let image = real.image("busybox:1");
    let first = svc
        .create(json!({"images": [image], "nodeNames": [real.node], "pullPolicy": "Always"}))
        .await;
    assert_eq!(status(&svc.wait_end(&first, LONG).await), "completed");
    assert_eq!(jobs.created(), 1);

    // The kubelet lists pulled images in node.status.images at its next status update.
    let nodes: Api<Node> = Api::all(cluster().kube_client().await);
    let digest = real.registry_digest(&image, None);
    let listed = format!("{}/busybox@{digest}", real.registry);
    eventually(
        "the image in node.status.images",
        Duration::from_secs(60),
        || {
            let nodes = nodes.clone();
            let (listed, node) = (listed.clone(), real.node.clone());
            async move {
                let n = nodes.get(&node).await.ok()?;
                let images = n.status?.images?;
                images
                    .iter()
                    .any(|i| i.names.iter().flatten().any(|x| *x == listed))
                    .then_some(())
            }
        },
    )
    .await;

    let second = svc
        .create(json!({"images": [image], "nodeNames": [real.node]}))
        .await;
    let task = svc.wait_end(&second, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 1);
    assert_eq!(jobs.created(), 1, "no Job for a node that has the image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn cancel_mid_pull_leaves_nothing_on_the_node() {
    let real = real_node();
    // A 64 MiB pull from a loopback registry can end before the cancel lands;
    // then the image is removed from the node and the test tries again in a
    // fresh namespace, so the cancel checked below always came mid-pull.
    let mut attempt = 0;
    let (ns, svc, _dir, id) = loop {
        attempt += 1;
        let ns = format!("t-cancel-{attempt}");
        let (svc, dir) = real.service(&ns);
        let id = svc
            .create(json!({"images": [real.image("big:1")], "nodeNames": [real.node], "pullPolicy": "Always"}))
            .await;
        wait_pulling(&ns, "/big:1").await;
        let (code, v) = svc.cancel(&id).await;
        if code == 200 || code == 202 {
            break (ns, svc, dir, id);
        }
        assert!(
            code == 409 && v["status"] == "completed" && attempt < 3,
            "attempt {attempt}: {code} {v}"
        );
        real.remove_image(&real.image("big:1"));
    };
    let ns = ns.as_str();
    let client = cluster().kube_client().await;
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "cancelled");
    wait_no_jobs(ns, LONG).await;
    eventually("no pods left", LONG, || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(drop)
        }
    })
    .await;
    eventually("no containers left in containerd", LONG, || {
        let left = real.containers_of(ns);
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

/// Waits until the kubelet reports pulling `image_suffix` for a pod of `ns`.
async fn wait_pulling(ns: &str, image_suffix: &str) {
    let events: Api<Event> = Api::namespaced(cluster().kube_client().await, ns);
    eventually("the kubelet pulling the image", LONG, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Pulling")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains(image_suffix))
                })
                .then_some(())
        }
    })
    .await;
}

/// What a pod's containers reported: the first `ErrImagePull` / `InvalidImageName`
/// (reason, message) and the `imageID` of a container that ran, by container name.
type Reports = BTreeMap<String, (String, String)>;

fn collect(pod: &Pod, into: &mut Reports) {
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting {
            let reason = w.reason.unwrap_or_default();
            if reason == "ErrImagePull" || reason == "InvalidImageName" {
                into.entry(c.name.clone())
                    .or_insert((reason, w.message.unwrap_or_default()));
            }
        } else if state.terminated.is_some() {
            into.entry(c.name.clone())
                .or_insert(("imageID".to_owned(), c.image_id.clone()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn kube_sim_reports_what_the_real_kubelet_reports() {
    use futures::StreamExt;
    use kube::runtime::watcher;

    let real = real_node();
    let hello = real.image("hello:1");
    let hello_digest = real.registry_digest(&hello, None);
    let missing = real.image("missing:2");
    let bad = format!("{}/Bad:1", real.registry);
    let private = format!("{}/private/hello:1", real.auth_registry);
    let _sim = sim(&format!(
        r#"
timeScale: 0.1
nodes: [{{names: [fidelity-0]}}]
images:
  - match: "{hello}"
    digest: "{hello_digest}"
  - match: "{missing}"
    fail: ErrImagePull
  - match: "{private}"
    fail: Unauthorized
"#
    ));
    let ns = "t-fidelity";
    create_namespace(ns).await;
    let pods: Api<Pod> = Api::namespaced(cluster().kube_client().await, ns);
    let images = [
        ("hello", &hello),
        ("missing", &missing),
        ("bad", &bad),
        ("private", &private),
    ];
    for node in [real.node.as_str(), "fidelity-0"] {
        let containers: Vec<_> = images
            .iter()
            .map(|(name, image)| json!({"name": name, "image": image, "imagePullPolicy": "Always"}))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("p-{node}")},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0,
                "containers": containers
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    // Every status write is a watch event, so a short-lived ErrImagePull is not missed.
    let mut seen: BTreeMap<String, Reports> = BTreeMap::new();
    let stream = watcher(pods.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let complete = |seen: &BTreeMap<String, Reports>| {
        seen.len() == 2 && seen.values().all(|r| r.len() == images.len())
    };
    let deadline = tokio::time::Instant::now() + LONG;
    while !complete(&seen) {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("not every container reported in time: {seen:#?}"));
        if let Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) = ev {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            collect(&p, seen.entry(node).or_default());
        }
    }
    let real_reports = &seen[&real.node];
    let sim_reports = &seen["fidelity-0"];
    assert_eq!(real_reports, sim_reports);
    // And the values are the ones the service relies on.
    assert_eq!(
        real_reports["hello"].1,
        format!("{}/hello@{hello_digest}", real.registry)
    );
    assert!(real_reports["missing"].1.contains("code = NotFound"));
    assert!(real_reports["private"].1.contains("401 Unauthorized"));
    assert_eq!(real_reports["bad"].0, "InvalidImageName");
    pods.delete_collection(&Default::default(), &ListParams::default())
        .await
        .unwrap();
}

/// `to` relative to the directory `from` (kustomize takes only relative resource paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

fn kubectl(args: &[&str]) -> String {
    run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster().kubeconfig_path())
        .args(args))
}

/// Runs `cmd` to the end; asserts it succeeded and returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real node: scripts/test.sh real-node group"]
async fn the_service_runs_from_its_own_image_deployed_with_kustomize() {
    let real = real_node();
    let repo = kube_sim::testing::repo_root();
    // The image, built without a Docker engine and pushed to the local registry.
    let image = format!("{}/prewarm:e2e", real.registry);
    run(Command::new("bash")
        .arg(repo.join("scripts/service-image.sh"))
        .arg(&image)
        .env("PREWARM_BIN", env!("CARGO_BIN_EXE_prewarm")));

    // A kustomization over the test overlay: image, ports, token file.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api_port = kubectl(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
    .rsplit(':')
    .next()
    .unwrap()
    .to_owned();
    let token = format!("e2e-{}", std::process::id());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let overlay = relative(
        &dir.path().canonicalize().unwrap(),
        &repo.join("crates/server/tests/real-node-overlay"),
    );
    let (name, tag) = image.rsplit_once(':').unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {overlay}
images:
  - name: ghcr.io/prewarm/prewarm
    newName: {name}
    newTag: {tag}
secretGenerator:
  - name: prewarm-tokens
    namespace: prewarm
    literals: ["tokens=e2e admin {digest}"]
patches:
  - target: {{kind: Deployment, name: prewarm}}
    patch: '[{{"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort", "value": {port}}}]'
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: prewarm, namespace: prewarm}}
      spec:
        template:
          spec:
            containers:
              - name: prewarm
                env:
                  - {{name: PREWARM_LISTEN, value: "127.0.0.1:{port}"}}
                  - {{name: KUBERNETES_SERVICE_PORT, value: "{api_port}"}}
                  - {{name: PREWARM_HELPER_IMAGE, value: "{image}"}}
"#,
            overlay = overlay.display(),
            digest = prewarm::http::auth::token_digest(&token),
        ),
    )
    .unwrap();
    let kdir = dir.path().to_str().unwrap();
    kubectl(&["apply", "-k", kdir]);

    // Ready once the kubelet's readiness probe passes; then only HTTP on loopback.
    let url = format!("http://127.0.0.1:{port}");
    let pods: Api<Pod> = Api::namespaced(cluster().kube_client().await, "prewarm");
    eventually("the service pod Ready", LONG, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=prewarm"))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .then_some(())
        }
    })
    .await;
    let client = http();
    let anonymous = client
        .post(format!("{url}/api/v1/tasks"))
        .json(&json!({"images": ["x:1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let hello = real.image("hello:1");
    let created: serde_json::Value = client
        .post(format!("{url}/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&json!({"images": [hello], "nodeNames": [real.node], "pullPolicy": "Always"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["taskId"].as_str().expect("taskId").to_owned();
    let task = eventually("the task ends", LONG, || {
        let (client, url, id, token) = (client.clone(), url.clone(), id.clone(), token.clone());
        async move {
            let t: prewarm_api::Task = client
                .get(format!("{url}/api/v1/tasks/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            t.status.is_terminal().then_some(t)
        }
    })
    .await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(
        task.image_statuses[0].digests,
        [real.registry_digest(&hello, None)]
    );

    kubectl(&["delete", "-k", kdir, "--wait=true", "--timeout=120s"]);
}
