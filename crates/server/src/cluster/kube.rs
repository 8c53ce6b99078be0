//! The kube-rs implementation of `Cluster`: three watch-fed caches (Nodes,
//! and the service's own Jobs and Pods by label) shared by every task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, Resource};
use tokio::sync::broadcast;

use crate::metrics::{CountKubeRequests, Metrics};

use super::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, ContainerObservation, ContainerState,
    JobObservation, NodeInfo, NodeTaint, PodObservation, PullJob, ATTEMPT_LABEL, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, NODE_ANNOTATION, TASK_LABEL,
};

/// Capacity of the event channel; a slower consumer gets `Lagged` and resyncs.
const EVENT_BUFFER: usize = 65_536;

/// Kubernetes through kube-rs.
pub struct KubeCluster {
    client: Client,
    namespace: String,
    jobs_api: Api<Job>,
    nodes: Arc<Cache<NodeInfo>>,
    jobs: Arc<Cache<JobObservation>>,
    pods: Arc<Cache<PodObservation>>,
    events: broadcast::Sender<ClusterEvent>,
    connected: Arc<AtomicBool>,
}

impl KubeCluster {
    /// Connects with the kubeconfig at `path` (None: `$KUBECONFIG`, `~/.kube/config`,
    /// then the in-cluster config), ensures `namespace` exists, starts the watches.
    /// Every API request is counted in `metrics`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: &str,
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
        Ok(Self::start(client, namespace))
    }

    /// The client the caches and calls use.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the watches on an existing client.
    pub fn start(client: Client, namespace: &str) -> KubeCluster {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let connected = Arc::new(AtomicBool::new(true));
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");

        let nodes = Arc::new(Cache::default());
        spawn_cache(
            "nodes",
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
            nodes.clone(),
            events.clone(),
            connected.clone(),
            |n: &Node| Some(node_info(n)),
            |n: &Node| n.metadata.name.clone(),
            |info: &NodeInfo| (!info.ready).then(|| ClusterEvent::NodeChanged(info.clone())),
            |name, _| Some(ClusterEvent::NodeDeleted(name)),
        );

        let jobs = Arc::new(Cache::default());
        spawn_cache(
            "jobs",
            watcher(
                Api::<Job>::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(&selector),
            ),
            jobs.clone(),
            events.clone(),
            connected.clone(),
            job_observation,
            |j: &Job| j.metadata.name.clone(),
            |j: &JobObservation| Some(ClusterEvent::JobChanged(j.clone())),
            |_, j| j.map(ClusterEvent::JobDeleted),
        );

        let pods = Arc::new(Cache::default());
        spawn_cache(
            "pods",
            watcher(
                Api::<Pod>::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(&selector),
            ),
            pods.clone(),
            events.clone(),
            connected.clone(),
            pod_observation,
            |p: &Pod| p.metadata.name.clone(),
            |p: &PodObservation| Some(ClusterEvent::PodChanged(p.clone())),
            |_, _| None,
        );

        KubeCluster {
            jobs_api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            nodes,
            jobs,
            pods,
            events,
            connected,
        }
    }

    /// The namespace of the pull Jobs.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// A watch-fed map of compact observations keyed by object name. Only what the
/// engine reads is kept (not whole objects), so memory stays small at
/// thousands of nodes and pods.
struct Cache<T> {
    current: RwLock<HashMap<String, T>>,
    /// The map being rebuilt by a (re)list, swapped in when it is complete.
    relisting: Mutex<Option<HashMap<String, T>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            current: RwLock::new(HashMap::new()),
            relisting: Mutex::new(None),
            synced: tokio::sync::watch::channel(false).0,
        }
    }
}

impl<T: Clone> Cache<T> {
    fn values(&self) -> Vec<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Runs one watch for the life of the process, keeping `cache` current and
/// turning changes into engine events. Lists again (and says `Resynced`)
/// after a desync; errors back off and mark the API disconnected.
#[allow(clippy::too_many_arguments)]
fn spawn_cache<K, T, S>(
    kind: &'static str,
    stream: S,
    cache: Arc<Cache<T>>,
    events: broadcast::Sender<ClusterEvent>,
    connected: Arc<AtomicBool>,
    observe: impl Fn(&K) -> Option<T> + Send + 'static,
    key: impl Fn(&K) -> Option<String> + Send + 'static,
    on_apply: impl Fn(&T) -> Option<ClusterEvent> + Send + 'static,
    on_delete: impl Fn(String, Option<T>) -> Option<ClusterEvent> + Send + 'static,
) where
    K: Send + 'static,
    T: Clone + Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(ev) => ev,
                Err(e) => {
                    connected.store(false, Ordering::Relaxed);
                    tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            connected.store(true, Ordering::Relaxed);
            let out = match ev {
                watcher::Event::Init => {
                    *cache.relisting.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(HashMap::new());
                    None
                }
                watcher::Event::InitApply(obj) => {
                    let (Some(k), Some(t)) = (key(&obj), observe(&obj)) else {
                        continue;
                    };
                    let out = on_apply(&t);
                    if let Some(m) = cache
                        .relisting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        m.insert(k, t);
                    }
                    out
                }
                watcher::Event::InitDone => {
                    let fresh = cache
                        .relisting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .unwrap_or_default();
                    *cache.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                    cache.synced.send_replace(true);
                    Some(ClusterEvent::Resynced)
                }
                watcher::Event::Apply(obj) => {
                    let (Some(k), Some(t)) = (key(&obj), observe(&obj)) else {
                        continue;
                    };
                    let out = on_apply(&t);
                    cache
                        .current
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(k, t);
                    out
                }
                watcher::Event::Delete(obj) => {
                    let Some(k) = key(&obj) else { continue };
                    let old = cache
                        .current
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&k);
                    on_delete(k, old.or_else(|| observe(&obj)))
                }
            };
            if let Some(ev) = out {
                let _ = events.send(ev);
            }
        }
    });
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
        self.nodes.wait_synced().await;
        self.jobs.wait_synced().await;
        self.pods.wait_synced().await;
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.values()
    }

    fn jobs(&self) -> Vec<JobObservation> {
        self.jobs.values()
    }

    fn pods(&self) -> Vec<PodObservation> {
        self.pods.values()
    }

    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    async fn create_job(&self, job: &PullJob) -> ClusterResult<()> {
        match self
            .jobs_api
            .create(&PostParams::default(), &job.to_job(&self.namespace))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete_job(&self, name: &str) -> ClusterResult<()> {
        match self
            .jobs_api
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()> {
        let lp = ListParams::default().labels(&format!(
            "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TASK_LABEL}={task_id}"
        ));
        self.jobs_api
            .delete_collection(&DeleteParams::background(), &lp)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn read_workload(
        &self,
        workload: &prewarm_api::WorkloadRef,
    ) -> ClusterResult<Option<prewarm_api::ResolvedWorkload>> {
        let spec = super::workload::pod_spec(&self.client, workload).await?;
        Ok(spec.map(|spec| super::workload::resolve(workload, &spec)))
    }

    async fn secret_exists(&self, name: &str) -> ClusterResult<bool> {
        super::workload::secret_exists(&self.client, &self.namespace, name).await
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

/// What the engine needs of a Node.
pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
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
        images: status
            .and_then(|s| s.images.as_ref())
            .map(|imgs| {
                imgs.iter()
                    .flat_map(|i| i.names.clone().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default(),
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

/// A pull pod as the engine sees it (None for objects without our labels).
pub fn pod_observation(p: &Pod) -> Option<PodObservation> {
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
        name: p.metadata.name.clone()?,
        job: label(p, "job-name").unwrap_or_default().to_owned(),
        task_id: label(p, TASK_LABEL)?.to_owned(),
        node: node_of(p, p.spec.as_ref().and_then(|s| s.node_name.as_ref()))?,
        attempt: label(p, ATTEMPT_LABEL)?.parse().ok()?,
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
