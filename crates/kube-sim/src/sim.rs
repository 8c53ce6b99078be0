//! The running simulator: registers nodes, watches pods bound to them and
//! drives one [`PodRun`] per pod in its own tokio task, writing `pods/status`
//! once per visible transition and `nodes/status` images at most once per node
//! per second. Scenario events fire on real-time timers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::{Error, Result};
use crate::kubelet::{NodeState, PodRun};
use crate::node::{conditions, images, node_object, taints};
use crate::scenario::{EventAction, NodeSpec, Scenario};

/// How often a node's `status.images` may be written.
pub const IMAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the simulator needs to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario (nodes, image rules, events).
    pub scenario: Scenario,
    /// Delete the registered nodes on shutdown.
    pub cleanup: bool,
    /// Node registrations in flight at once.
    pub create_concurrency: usize,
}

/// Builds a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Client::try_from(config).map_err(Error::Kube)
}

/// One simulated node: its scenario spec and its kubelet-side state.
struct SimNode {
    spec: NodeSpec,
    state: Mutex<NodeState>,
    /// Deleted by a scenario event: its pods are no longer served.
    gone: AtomicBool,
    /// Its `Ready` condition now (scenario events change it).
    ready: AtomicBool,
    /// Its `DiskPressure` condition now (scenario events change it).
    disk_pressure: AtomicBool,
}

/// Shared by the watcher loop and every pod task.
struct Context {
    client: Client,
    scenario: Arc<Scenario>,
    nodes: HashMap<String, Arc<SimNode>>,
    dirty_images: mpsc::UnboundedSender<String>,
}

/// Registers the scenario's nodes, calls `on_ready(count)` once all exist,
/// serves pods until `shutdown` resolves, then (with `cleanup`) deletes the nodes.
pub async fn run(
    client: Client,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(usize),
) -> Result<()> {
    let scenario = Arc::new(config.scenario);
    let nodes: HashMap<String, Arc<SimNode>> = scenario
        .nodes
        .iter()
        .map(|spec| {
            let node = SimNode {
                spec: spec.clone(),
                state: Mutex::new(NodeState::new(&spec.name, &scenario)),
                gone: AtomicBool::new(false),
                ready: AtomicBool::new(spec.ready),
                disk_pressure: AtomicBool::new(spec.disk_pressure),
            };
            (spec.name.clone(), Arc::new(node))
        })
        .collect();
    let (dirty_tx, dirty_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client,
        scenario,
        nodes,
        dirty_images: dirty_tx,
    });

    // Watch before registering, so pods bound while nodes are created are not missed.
    let watch = tokio::spawn(watch_pods(ctx.clone()));
    let registered = register_nodes(&ctx, config.create_concurrency.max(1)).await?;
    on_ready(registered);

    let flusher = tokio::spawn(flush_images(ctx.clone(), dirty_rx));
    let events = tokio::spawn(run_events(ctx.clone()));
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        r = watch => match r {
            Ok(r) => r,
            Err(e) => Err(Error::Process(format!("pod watcher panicked: {e}"))),
        },
    };
    flusher.abort();
    events.abort();
    if config.cleanup {
        delete_nodes(&ctx, |_| true).await;
    }
    result
}

/// Registers the nodes that exist from the start (not those with
/// `joinAfter`); returns how many.
async fn register_nodes(ctx: &Context, concurrency: usize) -> Result<usize> {
    let initial: Vec<Arc<SimNode>> = ctx
        .nodes
        .values()
        .filter(|n| n.spec.join_after.is_none())
        .cloned()
        .collect();
    let count = initial.len();
    register(ctx, initial, concurrency).await?;
    Ok(count)
}

/// Creates the Node objects of `nodes`, `concurrency` at a time.
async fn register(ctx: &Context, nodes: Vec<Arc<SimNode>>, concurrency: usize) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    futures::stream::iter(nodes)
        .map(|n| {
            let obj = {
                let state = n.state.lock().expect("node state lock");
                node_object(&n.spec, &state, now)
            };
            register_node(&api, obj)
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Creates the Node; writes its status separately if the API server dropped it on
/// create; takes over (patches) a Node of the same name that already exists.
async fn register_node(api: &Api<Node>, obj: Node) -> Result<()> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let status_patch = Patch::Merge(json!({ "status": obj.status }));
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => {
            let kept = created
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| !c.is_empty());
            if !kept {
                api.patch_status(&name, &PatchParams::default(), &status_patch)
                    .await?;
            }
            // Admission adds the not-ready taint to new Nodes; with no node-lifecycle
            // controller to lift it, do what it would.
            let want = obj.spec.as_ref().and_then(|s| s.taints.clone());
            let got = created.spec.as_ref().and_then(|s| s.taints.clone());
            if want.clone().unwrap_or_default() != got.unwrap_or_default() {
                let patch = Patch::Merge(json!({ "spec": { "taints": want } }));
                api.patch(&name, &PatchParams::default(), &patch).await?;
            }
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let meta = json!({
                "metadata": { "labels": obj.metadata.labels, "annotations": obj.metadata.annotations },
                "spec": obj.spec,
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(meta))
                .await?;
            api.patch_status(&name, &PatchParams::default(), &status_patch)
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn delete_nodes(ctx: &Context, select: impl Fn(&str) -> bool) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let targets: Vec<&Arc<SimNode>> = ctx
        .nodes
        .values()
        .filter(|n| select(&n.spec.name) && !n.gone.swap(true, Ordering::SeqCst))
        .collect();
    futures::stream::iter(targets)
        .for_each_concurrent(64, |n| {
            let api = api.clone();
            async move {
                match api.delete(&n.spec.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => tracing::warn!(node = %n.spec.name, error = %e, "deleting node"),
                }
            }
        })
        .await;
}

/// Coalesces image changes: each dirty node gets one `nodes/status` write per interval.
async fn flush_images(ctx: Arc<Context>, mut dirty: mpsc::UnboundedReceiver<String>) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut pending: HashSet<String> = HashSet::new();
    loop {
        let Some(first) = dirty.recv().await else {
            return;
        };
        pending.insert(first);
        tokio::time::sleep(IMAGE_FLUSH_INTERVAL).await;
        while let Ok(name) = dirty.try_recv() {
            pending.insert(name);
        }
        let batch: Vec<String> = pending.drain().collect();
        futures::stream::iter(batch)
            .for_each_concurrent(16, |name| {
                let api = api.clone();
                let ctx = ctx.clone();
                async move {
                    let Some(node) = ctx.nodes.get(&name) else {
                        return;
                    };
                    if node.gone.load(Ordering::SeqCst) {
                        return;
                    }
                    let images = images(&node.state.lock().expect("node state lock"));
                    let patch = Patch::Merge(json!({ "status": { "images": images } }));
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &patch)
                        .await
                    {
                        tracing::warn!(node = %name, error = %e, "writing node images");
                    }
                }
            })
            .await;
    }
}

/// Applies `change` to the matching nodes still there and writes their
/// conditions and condition taints (`Ready`, `DiskPressure`) as they now are.
async fn set_conditions(
    ctx: &Context,
    api: &Api<Node>,
    glob: &globset::GlobMatcher,
    change: impl Fn(&SimNode),
) {
    let now = Timestamp::now();
    for node in ctx.nodes.values() {
        if !glob.is_match(&node.spec.name) || node.gone.load(Ordering::SeqCst) {
            continue;
        }
        change(node);
        let ready = node.ready.load(Ordering::SeqCst);
        let pressure = node.disk_pressure.load(Ordering::SeqCst);
        let status =
            Patch::Merge(json!({ "status": { "conditions": conditions(ready, pressure, now) } }));
        let spec =
            Patch::Merge(json!({ "spec": { "taints": taints(&node.spec, ready, pressure) } }));
        let pp = PatchParams::default();
        let result = match api.patch_status(&node.spec.name, &pp, &status).await {
            Ok(_) => api.patch(&node.spec.name, &pp, &spec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(node = %node.spec.name, error = %e, "setting conditions");
        }
    }
}

async fn run_events(ctx: Arc<Context>) {
    let start = tokio::time::Instant::now();
    let api: Api<Node> = Api::all(ctx.client.clone());
    for event in &ctx.scenario.events {
        tokio::time::sleep_until(start + event.after).await;
        match &event.action {
            EventAction::AddNodes(names) => {
                tracing::info!(nodes = names.len(), "event: adding nodes");
                let joining = names
                    .iter()
                    .filter_map(|n| ctx.nodes.get(n).cloned())
                    .collect();
                if let Err(e) = register(&ctx, joining, 64).await {
                    tracing::warn!(error = %e, "adding nodes");
                }
            }
            EventAction::DeleteNodes(glob) => {
                tracing::info!(nodes = %glob.glob(), "event: deleting nodes");
                delete_nodes(&ctx, |n| glob.is_match(n)).await;
            }
            EventAction::MoveTag(image, digest) => {
                let at_ms = Timestamp::now().as_millisecond();
                tracing::info!(image = %image.normalized(), digest, at_ms, "event: moving a tag");
                ctx.scenario.moved_tags.move_to(image, digest);
            }
            EventAction::SetReady(glob, ready) => {
                tracing::info!(nodes = %glob.glob(), ready, "event: setting Ready");
                set_conditions(&ctx, &api, glob, |node| {
                    node.ready.store(*ready, Ordering::SeqCst)
                })
                .await;
            }
            EventAction::SetDiskPressure(glob, pressure) => {
                tracing::info!(nodes = %glob.glob(), disk_pressure = pressure, "event: setting DiskPressure");
                set_conditions(&ctx, &api, glob, |node| {
                    node.disk_pressure.store(*pressure, Ordering::SeqCst)
                })
                .await;
            }
        }
    }
}

/// The single Pod watcher (all namespaces, bound pods only), routing each pod on
/// one of our nodes to its task.
async fn watch_pods(ctx: Arc<Context>) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
    let mut deleting: HashSet<String> = HashSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                route(&ctx, pod, &mut tasks, &mut deleting);
            }
            Event::InitDone => {
                tasks.retain(|uid, task| {
                    let keep = listed.contains(uid);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                deleting.retain(|uid| listed.contains(uid));
            }
            Event::Apply(pod) => route(&ctx, pod, &mut tasks, &mut deleting),
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    if let Some(task) = tasks.remove(uid) {
                        task.abort();
                    }
                    deleting.remove(uid);
                }
            }
        }
    }
    Ok(())
}

fn route(
    ctx: &Arc<Context>,
    pod: Pod,
    tasks: &mut HashMap<String, AbortHandle>,
    deleting: &mut HashSet<String>,
) {
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return;
    };
    let Some(node) = ctx.nodes.get(node_name) else {
        return;
    };
    if node.gone.load(Ordering::SeqCst) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(task) = tasks.remove(&uid) {
            task.abort();
        }
        if deleting.insert(uid.clone()) {
            tokio::spawn(remove_pod(ctx.client.clone(), pod, uid));
        }
        return;
    }
    if tasks.contains_key(&uid) {
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    let task = tokio::spawn(serve_pod(ctx.clone(), node.clone(), pod));
    tasks.insert(uid, task.abort_handle());
}

/// Finishes a deletion the way a kubelet does once containers are gone:
/// grace period 0, guarded by the pod's uid.
async fn remove_pod(client: Client, pod: Pod, uid: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::debug!(pod = %name, namespace = %ns, "pod removed"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, namespace = %ns, error = %e, "removing pod"),
    }
}

/// Plays the kubelet for one pod until it ends (or the task is aborted).
async fn serve_pod(ctx: Arc<Context>, node: Arc<SimNode>, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut run = {
        let mut state = node.state.lock().expect("node state lock");
        PodRun::new(&pod, &mut state, Timestamp::now())
    };
    let mut written: Option<PodStatus> = None;
    loop {
        if node.gone.load(Ordering::SeqCst) {
            return;
        }
        let now = Timestamp::now();
        let advance = {
            let mut state = node.state.lock().expect("node state lock");
            run.advance(now, &mut state, &ctx.scenario)
        };
        if advance.node_images_changed {
            let _ = ctx.dirty_images.send(node.spec.name.clone());
        }
        let status = run.status();
        if written.as_ref() != Some(&status) {
            match write_status(&api, &name, &uid, &status).await {
                Ok(()) => written = Some(status),
                Err(WriteError::Gone) => return,
                Err(WriteError::Retry) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if run.outcome().is_some() {
            return;
        }
        let Some(wake) = advance.next_wake else {
            // Stuck for good (e.g. InvalidImageName without a deadline).
            return;
        };
        let wait = wake.duration_since(Timestamp::now());
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
    }
}

enum WriteError {
    Gone,
    Retry,
}

/// One `pods/status` write; the uid in the patch makes it fail if the pod was replaced.
async fn write_status(
    api: &Api<Pod>,
    name: &str,
    uid: &str,
    status: &PodStatus,
) -> Result<(), WriteError> {
    let patch = Patch::Merge(json!({ "metadata": { "uid": uid }, "status": status }));
    match api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Err(WriteError::Gone),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            // The uid precondition failed (pod replaced) or the status was rejected.
            tracing::warn!(pod = %name, message = %s.message, "pod status rejected");
            Err(WriteError::Gone)
        }
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "writing pod status");
            Err(WriteError::Retry)
        }
    }
}
