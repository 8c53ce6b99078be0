//! The kube-rs implementation of `Cluster`: kube-runtime reflector stores
//! (Nodes, and the service's own Pods by label, plus its Jobs in
//! `PullMode::Jobs`) shared by every task, their watches owned by the
//! cluster object. In `PullMode::Pods` the pull Pods stand in for the Jobs:
//! same names, labels and calls, one object less per node.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerImage, ContainerStatus, Namespace, Node, Pod, PodSpec, PodStatus, PodTemplateSpec,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, Resource};
use kube_quantity::ParsedQuantity;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::lean::{Lean, Parts};
use crate::metrics::{CountKubeRequests, Metrics};

use super::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, ContainerObservation, ContainerState,
    JobObservation, NodeInfo, NodeTaint, PodObservation, PullJob, PullMode, ATTEMPT_LABEL,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, NODE_ANNOTATION, TASK_LABEL,
};

/// Capacity of the event channel; a slower consumer gets `Lagged` and resyncs.
const EVENT_BUFFER: usize = 65_536;

/// Kubernetes through kube-rs.
pub struct KubeCluster {
    client: Client,
    namespace: String,
    mode: PullMode,
    jobs_api: Api<Job>,
    pods_api: Api<Pod>,
    nodes: Store<Lean<Node>>,
    /// The pull Jobs (`PullMode::Jobs` only: pods mode needs no Job access).
    jobs: Option<Store<Lean<Job>>>,
    pods: Store<Lean<Pod>>,
    events: broadcast::Sender<ClusterEvent>,
    connected: Arc<AtomicBool>,
    /// Stops the watches when the cluster is dropped.
    _watches: DropGuard,
}

impl KubeCluster {
    /// Connects with the kubeconfig at `path` (None: `$KUBECONFIG`, `~/.kube/config`,
    /// then the in-cluster config), ensures `namespace` exists, starts the watches
    /// for pulls made the `mode` way. Every API request is counted in `metrics`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: &str,
        mode: PullMode,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<KubeCluster> {
        let mut config = client_config(kubeconfig).await?;
        // The client's own retry layer would hold a create for up to 15 retries
        // inside one call; the engine retries per node instead, with backoff
        // and Retry-After, where shutdown and the pull timeout can see it.
        config.default_retry = false;
        if config.accept_invalid_certs {
            tracing::warn!(
                server = %config.cluster_url,
                "the kubeconfig skips TLS verification of the API server"
            );
        }
        let client = kube::client::ClientBuilder::try_from(config)
            .context("building the Kubernetes client")?
            .with_layer(&CountKubeRequests(metrics))
            .build();
        ensure_namespace(&client, namespace).await?;
        Ok(Self::start(client, namespace, mode))
    }

    /// The client the caches and calls use.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the watches on an existing client.
    pub fn start(client: Client, namespace: &str, mode: PullMode) -> KubeCluster {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let connected = Arc::new(AtomicBool::new(true));
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let stop = CancellationToken::new();
        let watches = Watches {
            events: &events,
            connected: &connected,
            stop: &stop,
        };

        let nodes = watches.spawn(
            "nodes",
            Api::all(client.clone()),
            watcher::Config::default(),
            |n: &mut Node| {
                // Only what `node_info` reads is kept: labels, the Ready and
                // DiskPressure conditions, taints, cordon, allocatable
                // ephemeral-storage and images.
                n.metadata.annotations = None;
                if let Some(status) = n.status.as_mut() {
                    status.addresses = None;
                    if let Some(allocatable) = status.allocatable.as_mut() {
                        allocatable.retain(|k, _| k == EPHEMERAL_STORAGE);
                    }
                    status.capacity = None;
                    status.daemon_endpoints = None;
                    status.node_info = None;
                    status.volumes_attached = None;
                    status.volumes_in_use = None;
                    if let Some(conditions) = status.conditions.as_mut() {
                        conditions.retain(|c| c.type_ == "Ready" || c.type_ == "DiskPressure");
                    }
                }
            },
            NodeChanges::default().into_events(),
        );
        let jobs = (mode == PullMode::Jobs).then(|| {
            watches.spawn(
                "jobs",
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(&selector),
                strip_job,
                each(
                    |j| job_observation(j).map(|j| ClusterEvent::JobChanged(Box::new(j))),
                    |j| job_observation(j).map(|j| ClusterEvent::JobDeleted(Box::new(j))),
                ),
            )
        });
        let pods = watches.spawn(
            "pods",
            Api::namespaced(client.clone(), namespace),
            watcher::Config::default().labels(&selector),
            strip_pod,
            each(
                |p| pod_observation(p).map(|p| ClusterEvent::PodChanged(Box::new(p))),
                // A pull Pod is its own Job in pods mode: its deletion is the Job's.
                move |p| match mode {
                    PullMode::Jobs => None,
                    PullMode::Pods => pod_as_job(p).map(|j| ClusterEvent::JobDeleted(Box::new(j))),
                },
            ),
        );

        KubeCluster {
            jobs_api: Api::namespaced(client.clone(), namespace),
            pods_api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            mode,
            nodes,
            jobs,
            pods,
            events,
            connected,
            _watches: stop.drop_guard(),
        }
    }

    /// The namespace of the pull Jobs.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The label selector of a task's pull objects.
    fn task_selector(task_id: &str) -> ListParams {
        ListParams::default().labels(&format!(
            "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TASK_LABEL}={task_id}"
        ))
    }
}

/// Creates `obj`; one of the same name already there counts as success.
async fn create_or_adopt<K>(api: &Api<K>, obj: &K) -> ClusterResult<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + DeserializeOwned,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Deletes `name` (Background propagation); a missing object counts as success.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> ClusterResult<()>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Deletes every `K` in `namespace` that `lp` selects (Background
/// propagation). The API server answers with every object deleted, in full:
/// for a cancelled 5,000-node task about a thousand pull Pods, whose
/// decoding (kube's `Either` answer is buffered untyped first) held some
/// 65 MB at once. The answer is read and dropped frame by frame instead;
/// only an error answer is decoded.
async fn delete_collection<K>(
    client: &Client,
    namespace: &str,
    lp: &ListParams,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    use http_body_util::BodyExt as _;
    let request = kube::core::Request::new(K::url_path(&(), Some(namespace)))
        .delete_collection(&DeleteParams::background(), lp)
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let code = response.status();
    let mut body = response.into_body();
    if code.is_success() {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(());
    }
    let bytes = body.collect().await?.to_bytes();
    let status = serde_json::from_slice::<kube::core::Status>(&bytes).unwrap_or_else(|_| {
        kube::core::Status::failure(&String::from_utf8_lossy(&bytes), "").with_code(code.as_u16())
    });
    Err(kube::Error::Api(status.boxed()))
}

/// Engine events of a kind whose objects map one by one: `on_apply` and
/// `on_delete` per object, `Resynced` after every list.
fn each<K>(
    on_apply: impl Fn(&K) -> Option<ClusterEvent> + Send + 'static,
    on_delete: impl Fn(&K) -> Option<ClusterEvent> + Send + 'static,
) -> impl FnMut(&watcher::Event<Lean<K>>) -> Option<ClusterEvent> + Send + 'static {
    move |ev| match ev {
        watcher::Event::Init => None,
        watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => on_apply(obj),
        watcher::Event::InitDone => Some(ClusterEvent::Resynced),
        watcher::Event::Delete(obj) => on_delete(obj),
    }
}

/// Which node updates become events: a node that joined, or whose
/// [`NodeInfo::fingerprint`] changed (Ready, cordon, labels, taints, images),
/// and every update of a NotReady one (its pulls fail); heartbeats and
/// other status updates stay silent. Remembers one hash per node.
#[derive(Default)]
struct NodeChanges {
    /// Fingerprint per node name.
    seen: HashMap<String, u64>,
    /// Names listed since the current relist began (`None` outside one).
    listed: Option<HashSet<String>>,
}

impl NodeChanges {
    fn into_events(mut self) -> impl FnMut(&watcher::Event<Lean<Node>>) -> Option<ClusterEvent> {
        move |ev| self.on_event(ev)
    }

    fn on_event(&mut self, ev: &watcher::Event<Lean<Node>>) -> Option<ClusterEvent> {
        match ev {
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                None
            }
            watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                let info = node_info(node);
                if let Some(listed) = self.listed.as_mut() {
                    listed.insert(info.name.clone());
                }
                let print = info.fingerprint();
                let changed = self.seen.insert(info.name.clone(), print) != Some(print);
                (changed || !info.ready).then(|| ClusterEvent::NodeChanged(Box::new(info)))
            }
            watcher::Event::InitDone => {
                // Nodes deleted while the watch was down are not listed again.
                if let Some(listed) = self.listed.take() {
                    self.seen.retain(|name, _| listed.contains(name));
                }
                Some(ClusterEvent::Resynced)
            }
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.clone()?;
                self.seen.remove(&name);
                Some(ClusterEvent::NodeDeleted(name))
            }
        }
    }
}

/// What every watch shares: where events go, the connection flag, the stop token.
struct Watches<'a> {
    events: &'a broadcast::Sender<ClusterEvent>,
    connected: &'a Arc<AtomicBool>,
    stop: &'a CancellationToken,
}

impl Watches<'_> {
    /// Runs a kube-runtime reflector over `api` until the cluster is dropped:
    /// its store is the cache the engine reads (a relist replaces it whole,
    /// so objects deleted meanwhile are gone from it), and `to_event` turns
    /// its changes into engine events. Errors back off with kube-runtime's
    /// default backoff and mark the API disconnected. Objects are decoded
    /// [`Lean`], then `strip` drops what the cache does not keep.
    fn spawn<K>(
        &self,
        kind: &'static str,
        api: Api<Lean<K>>,
        config: watcher::Config,
        mut strip: impl FnMut(&mut K) + Send + 'static,
        mut to_event: impl FnMut(&watcher::Event<Lean<K>>) -> Option<ClusterEvent> + Send + 'static,
    ) -> Store<Lean<K>>
    where
        K: Parts
            + k8s_openapi::Resource
            + k8s_openapi::Metadata<Ty = kube::api::ObjectMeta>
            + Clone
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(api, config)
            .default_backoff()
            .modify(move |obj| strip(&mut obj.0))
            .reflect(writer);
        let (events, connected, stop) = (
            self.events.clone(),
            self.connected.clone(),
            self.stop.clone(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let item = tokio::select! {
                    () = stop.cancelled() => break,
                    item = stream.next() => match item {
                        Some(item) => item,
                        None => break,
                    },
                };
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        connected.store(false, Ordering::Relaxed);
                        tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                        continue;
                    }
                };
                connected.store(true, Ordering::Relaxed);
                if let Some(ev) = to_event(&ev) {
                    let _ = events.send(ev);
                }
            }
        });
        store
    }
}

async fn ensure_namespace(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(namespace)
        .await
        .with_context(|| format!("reading namespace {namespace}"))?
        .is_some()
    {
        return Ok(());
    }
    let mut ns = Namespace::default();
    ns.metadata.name = Some(namespace.to_owned());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {namespace}")),
    }
}

pub(super) fn map_err(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) => ClusterError::Api {
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
            retry_after: s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|secs| *secs > 0)
                .map(|secs| std::time::Duration::from_secs(u64::from(secs))),
        },
        other => ClusterError::Unreachable(other.to_string()),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn synced(&self) {
        // Err only if a watch ended, which happens only when the cluster is dropped.
        let _ = self.nodes.wait_until_ready().await;
        if let Some(jobs) = &self.jobs {
            let _ = jobs.wait_until_ready().await;
        }
        let _ = self.pods.wait_until_ready().await;
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.state().iter().map(|n| node_info(n)).collect()
    }

    fn jobs(&self) -> Vec<JobObservation> {
        match &self.jobs {
            Some(jobs) => jobs
                .state()
                .iter()
                .filter_map(|j| job_observation(j))
                .collect(),
            None => self
                .pods
                .state()
                .iter()
                .filter_map(|p| pod_as_job(p))
                .collect(),
        }
    }

    fn pods(&self) -> Vec<PodObservation> {
        self.pods
            .state()
            .iter()
            .filter_map(|p| pod_observation(p))
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    async fn create_job(&self, job: &PullJob) -> ClusterResult<()> {
        match self.mode {
            PullMode::Jobs => create_or_adopt(&self.jobs_api, &job.to_job(&self.namespace)).await,
            PullMode::Pods => create_or_adopt(&self.pods_api, &job.to_pod(&self.namespace)).await,
        }
    }

    async fn delete_job(&self, name: &str) -> ClusterResult<()> {
        match self.mode {
            PullMode::Jobs => delete_if_present(&self.jobs_api, name).await,
            PullMode::Pods => delete_if_present(&self.pods_api, name).await,
        }
    }

    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()> {
        let lp = Self::task_selector(task_id);
        let deleted = match self.mode {
            PullMode::Jobs => delete_collection::<Job>(&self.client, &self.namespace, &lp).await,
            PullMode::Pods => delete_collection::<Pod>(&self.client, &self.namespace, &lp).await,
        };
        deleted.map_err(map_err)
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn read_workload(
        &self,
        workload: &prewarm_api::WorkloadRef,
    ) -> ClusterResult<Option<prewarm_api::ResolvedWorkload>> {
        let spec = super::workload::pod_spec(&self.client, workload).await?;
        Ok(spec.map(|(spec, meta)| super::workload::resolve(workload, &spec, &meta)))
    }

    async fn secret_exists(&self, name: &str) -> ClusterResult<bool> {
        super::workload::secret_exists(&self.client, &self.namespace, name).await
    }

    async fn remove_node_taint(&self, node: &str, key: &str, effect: &str) -> ClusterResult<bool> {
        super::node_taint::remove_taint(&self.client, node, key, effect).await
    }

    async fn probe(&self) -> ClusterResult<()> {
        match self.client.apiserver_version().await {
            Ok(_) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.connected.store(false, Ordering::Relaxed);
                Err(map_err(e))
            }
        }
    }
}

/// Resource name of a node's local disk for pods and images.
const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// What the engine needs of a Node.
pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .is_some_and(|c| c.status == "True")
    };
    let ready = condition("Ready");
    let reported = status.and_then(|s| s.images.as_deref()).unwrap_or_default();
    let size = |i: &ContainerImage| i.size_bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0));
    let spec = n.spec.as_ref();
    NodeInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        ready,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        tainted: spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| {
            t.iter()
                .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        }),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| NodeTaint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect: t.effect.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        images: reported
            .iter()
            .flat_map(|i| i.names.clone().unwrap_or_default())
            .collect(),
        image_sizes: reported
            .iter()
            .flat_map(|i| std::iter::repeat_n(size(i), i.names.as_ref().map_or(0, Vec::len)))
            .collect(),
        images_bytes: reported.iter().map(size).sum(),
        ephemeral_storage: status
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(EPHEMERAL_STORAGE))
            .and_then(|q| ParsedQuantity::try_from(q).ok())
            .and_then(|q| q.to_bytes_u64()),
        disk_pressure: condition("DiskPressure"),
    }
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn node_of<K: Resource>(obj: &K, fallback: Option<&String>) -> Option<String> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_ANNOTATION))
        .or(fallback)
        .cloned()
}

/// Of the annotations a [`Lean`] pull object kept, keeps only the node's.
fn strip_meta(meta: &mut kube::api::ObjectMeta) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == NODE_ANNOTATION);
    }
}

/// A pull Pod as the cache keeps it: what [`pod_observation`] and
/// [`pod_as_job`] read (the node name, phase, reason, message and each
/// container's name, state and image ID), none of the spec the API server
/// filled in (containers, volumes, tolerations) nor the status it adds.
pub fn strip_pod(p: &mut Pod) {
    strip_meta(&mut p.metadata);
    if let Some(spec) = p.spec.as_mut() {
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            ..PodSpec::default()
        };
    }
    if let Some(status) = p.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            reason: status.reason.take(),
            message: status.message.take(),
            init_container_statuses: status.init_container_statuses.take().map(strip_containers),
            container_statuses: status.container_statuses.take().map(strip_containers),
            ..PodStatus::default()
        };
    }
}

fn strip_containers(list: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    list.into_iter()
        .map(|c| ContainerStatus {
            name: c.name,
            state: c.state,
            image_id: c.image_id,
            ..ContainerStatus::default()
        })
        .collect()
}

/// A pull Job as the cache keeps it: what [`job_observation`] reads (the
/// template's node name and the Failed condition).
pub fn strip_job(j: &mut Job) {
    strip_meta(&mut j.metadata);
    if let Some(spec) = j.spec.as_mut() {
        let node_name = spec.template.spec.as_mut().and_then(|s| s.node_name.take());
        *spec = JobSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    node_name,
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        };
    }
    if let Some(status) = j.status.as_mut() {
        *status = JobStatus {
            conditions: status.conditions.take().map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Failed")
                    .map(|c| JobCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        ..JobCondition::default()
                    })
                    .collect()
            }),
            ..JobStatus::default()
        };
    }
}

/// A pull Job as the engine sees it (None for objects without our labels).
pub fn job_observation(j: &Job) -> Option<JobObservation> {
    let node_from_spec = j
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.node_name.as_ref());
    Some(JobObservation {
        name: j.metadata.name.clone()?,
        task_id: label(j, TASK_LABEL)?.to_owned(),
        node: node_of(j, node_from_spec)?,
        attempt: label(j, ATTEMPT_LABEL)?.parse().ok()?,
        failed_reason: j
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"))
            .map(|c| c.reason.clone().unwrap_or_else(|| "Failed".to_owned())),
    })
}

/// A pull Pod standing in for its Job (`PullMode::Pods`): a failed Pod
/// reports itself through `PodChanged`, so it carries no Job-level failure.
pub fn pod_as_job(p: &Pod) -> Option<JobObservation> {
    Some(JobObservation {
        name: p.metadata.name.clone()?,
        task_id: label(p, TASK_LABEL)?.to_owned(),
        node: node_of(p, p.spec.as_ref().and_then(|s| s.node_name.as_ref()))?,
        attempt: label(p, ATTEMPT_LABEL)?.parse().ok()?,
        failed_reason: None,
    })
}

/// A pull pod as the engine sees it (None for objects without our labels).
pub fn pod_observation(p: &Pod) -> Option<PodObservation> {
    let own = pod_as_job(p)?;
    let status = p.status.clone().unwrap_or_default();
    let containers = |list: Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        list.unwrap_or_default()
            .into_iter()
            .map(|c| {
                let state = c.state.unwrap_or_default();
                let state = if state.running.is_some() {
                    ContainerState::Running
                } else if state.terminated.is_some() {
                    ContainerState::Terminated
                } else {
                    let w = state.waiting.unwrap_or_default();
                    ContainerState::Waiting {
                        reason: w.reason.unwrap_or_default(),
                        message: w.message.unwrap_or_default(),
                    }
                };
                ContainerObservation {
                    name: c.name,
                    state,
                    image_id: c.image_id,
                }
            })
            .collect()
    };
    Some(PodObservation {
        // A pod made by a Job names it; a pull Pod made directly is its own Job.
        job: label(p, "job-name").unwrap_or(&own.name).to_owned(),
        name: own.name,
        task_id: own.task_id,
        node: own.node,
        attempt: own.attempt,
        phase: status.phase.clone().unwrap_or_default(),
        reason: status.reason.clone().unwrap_or_default(),
        message: status.message.clone().unwrap_or_default(),
        init_containers: containers(status.init_container_statuses.clone()),
        containers: containers(status.container_statuses.clone()),
    })
}

/// The client configuration: `kubeconfig` if given, else `$KUBECONFIG`,
/// `~/.kube/config`, then in-cluster.
pub async fn client_config(kubeconfig: Option<&Path>) -> anyhow::Result<Config> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))
        }
        None => Config::infer()
            .await
            .context("finding a Kubernetes configuration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, images: &[&str], heartbeat: &str) -> Lean<Node> {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "resourceVersion": heartbeat},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "lastHeartbeatTime": heartbeat}],
                "images": [{"names": images}]
            }
        }))
        .unwrap()
    }

    fn changed(ev: Option<ClusterEvent>) -> Option<(String, bool)> {
        match ev {
            Some(ClusterEvent::NodeChanged(n)) => Some((n.name, n.ready)),
            _ => None,
        }
    }

    #[test]
    fn the_event_channel_stays_small() {
        // Every slot of the channel is allocated up front, each as large as
        // an event: 65,536 × 32 bytes is 2 MiB (unboxed events made it 16).
        assert!(std::mem::size_of::<ClusterEvent>() <= 32);
        assert!(EVENT_BUFFER * std::mem::size_of::<ClusterEvent>() <= 2 << 20);
    }

    #[test]
    fn node_events_for_joins_and_changes_not_for_heartbeats() {
        let mut changes = NodeChanges::default();
        let mut on = |ev| changes.on_event(&ev);
        assert!(on(watcher::Event::Init).is_none());
        let a = node("a", true, &["nginx:1"], "2026-01-01T00:00:00Z");
        assert_eq!(
            changed(on(watcher::Event::InitApply(a.clone()))),
            Some(("a".into(), true)),
            "first seen"
        );
        assert!(matches!(
            on(watcher::Event::InitDone),
            Some(ClusterEvent::Resynced)
        ));
        // A heartbeat changes nothing the engine reads: no event.
        let beat = node("a", true, &["nginx:1"], "2026-01-01T00:00:10Z");
        assert!(on(watcher::Event::Apply(beat)).is_none());
        // A node joining NotReady, then turning Ready.
        let b = node("b", false, &[], "2026-01-01T00:00:00Z");
        assert_eq!(
            changed(on(watcher::Event::Apply(b.clone()))),
            Some(("b".into(), false))
        );
        assert_eq!(
            changed(on(watcher::Event::Apply(b))),
            Some(("b".into(), false)),
            "every update of a NotReady node"
        );
        let b = node("b", true, &[], "2026-01-01T00:00:20Z");
        assert_eq!(
            changed(on(watcher::Event::Apply(b.clone()))),
            Some(("b".into(), true))
        );
        // New images on a Ready node.
        let b2 = node("b", true, &["nginx:1"], "2026-01-01T00:00:30Z");
        assert_eq!(
            changed(on(watcher::Event::Apply(b2))),
            Some(("b".into(), true))
        );
        assert!(matches!(
            on(watcher::Event::Delete(b)),
            Some(ClusterEvent::NodeDeleted(ref n)) if n == "b"
        ));
        // A node deleted while the watch was down is not listed again: the
        // relist forgets it, and one joining under its name later is new.
        let c = node("c", true, &[], "2026-01-01T00:01:00Z");
        assert!(changed(on(watcher::Event::Apply(c.clone()))).is_some());
        assert!(on(watcher::Event::Init).is_none());
        assert!(on(watcher::Event::InitApply(a)).is_none(), "unchanged");
        assert!(on(watcher::Event::InitDone).is_some());
        assert!(changed(on(watcher::Event::Apply(c))).is_some());
    }

    /// A pull object as the API server returns it: `to_pod`/`to_job` plus
    /// the status, managed fields and annotations the cluster adds.
    fn served<K: serde::Serialize + DeserializeOwned>(obj: &K, extra: serde_json::Value) -> K {
        let mut v = serde_json::to_value(obj).unwrap();
        let meta = v["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), "0f3c".into());
        meta.insert("resourceVersion".into(), "812".into());
        meta.insert(
            "managedFields".into(),
            serde_json::json!([{"manager": "prewarm", "operation": "Update", "fieldsV1": {"f:spec": {}}}]),
        );
        meta["annotations"]["kubectl.kubernetes.io/last-applied"] = "x".repeat(2000).into();
        for (k, e) in extra.as_object().unwrap() {
            v[k] = e.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// `full` as the cache keeps it: decoded [`Lean`] as the watches
    /// decode it, then stripped.
    fn cached<K: Parts + serde::Serialize>(full: &K, strip: fn(&mut K)) -> Lean<K> {
        let mut lean: Lean<K> =
            serde_json::from_value(serde_json::to_value(full).unwrap()).unwrap();
        strip(&mut lean);
        lean
    }

    fn pull_job() -> PullJob {
        PullJob {
            task_id: "task-20260101-abc123".into(),
            task_suffix: "abc123".into(),
            node: "node-1".into(),
            attempt: 1,
            images: vec![(0, "nginx:1".into()), (1, "redis:7".into())],
            pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec!["regcred".into()],
            priority_class_name: None,
            helper_image: "prewarm:dev".into(),
            active_deadline_seconds: 600,
        }
    }

    fn size<K: serde::Serialize>(obj: &K) -> usize {
        serde_json::to_vec(obj).unwrap().len()
    }

    #[test]
    fn cached_pull_pods_keep_what_the_engine_reads_and_little_else() {
        let running = serde_json::json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
        let status = |name: &str, state: serde_json::Value| {
            serde_json::json!({"name": name, "image": "docker.io/library/nginx:1", "imageID": format!("sha256:{name}"),
                   "ready": false, "restartCount": 0, "started": true, "state": state,
                   "lastState": {"terminated": {"exitCode": 0, "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}})
        };
        let pod = served(
            &pull_job().to_pod("ns"),
            serde_json::json!({"status": {
                "phase": "Pending", "reason": "Waiting", "message": "pulling", "hostIP": "10.0.0.1", "podIP": "10.1.0.7",
                "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "False"}],
                "initContainerStatuses": [status("prewarm-helper", serde_json::json!({"terminated": {"exitCode": 0}}))],
                "containerStatuses": [
                    status("img-0", running),
                    status("img-1", serde_json::json!({"waiting": {"reason": "ErrImagePull", "message": "401"}}))
                ]
            }}),
        );
        let cached = cached(&pod, strip_pod);
        assert!(pod_observation(&pod).is_some());
        assert_eq!(pod_observation(&cached), pod_observation(&pod));
        assert_eq!(pod_as_job(&cached), pod_as_job(&pod));
        assert_eq!(cached.metadata.managed_fields, None);
        assert!(
            size(&cached.0) * 4 < size(&pod),
            "{} bytes cached of {}",
            size(&cached.0),
            size(&pod)
        );
    }

    #[test]
    fn cached_pull_jobs_keep_what_the_engine_reads_and_little_else() {
        let job = served(
            &pull_job().to_job("ns"),
            serde_json::json!({"status": {"failed": 1, "startTime": "2026-01-01T00:00:00Z", "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}
            ]}}),
        );
        let cached = cached(&job, strip_job);
        let seen = job_observation(&job).unwrap();
        assert_eq!(seen.failed_reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(job_observation(&cached), Some(seen));
        // A Job stripped before it failed still names its node.
        let mut fresh = pull_job().to_job("ns");
        fresh.metadata.annotations = None;
        let expected = job_observation(&fresh).unwrap();
        strip_job(&mut fresh);
        assert_eq!(job_observation(&fresh), Some(expected));
        assert!(size(&cached.0) * 4 < size(&job));
    }

    #[test]
    fn node_info_reads_disk_pressure_allocatable_disk_and_image_sizes() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {
                "allocatable": {"ephemeral-storage": "2Gi", "cpu": "4"},
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "DiskPressure", "status": "True"}
                ],
                "images": [
                    {"names": ["docker.io/library/nginx@sha256:aa", "docker.io/library/nginx:1.25"], "sizeBytes": 1000},
                    {"names": ["docker.io/library/redis:7"], "sizeBytes": 500}
                ]
            }
        }))
        .unwrap();
        let info = node_info(&node);
        assert!(info.ready && info.disk_pressure);
        assert_eq!(info.ephemeral_storage, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(info.images.len(), 3);
        assert_eq!(info.image_sizes, [1000, 1000, 500]);
        assert_eq!(info.images_bytes, 1500);

        let bare: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n2"}})).unwrap();
        let info = node_info(&bare);
        assert!(!info.disk_pressure);
        assert_eq!(info.ephemeral_storage, None);
        assert_eq!(info.images_bytes, 0);
    }
}
