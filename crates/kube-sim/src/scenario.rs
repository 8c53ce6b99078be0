//! The scenario file: which nodes exist, how image pulls behave, what is
//! preloaded, and timed events. [`Scenario::parse`] turns the YAML into a
//! validated, compiled form (globs compiled, node groups expanded).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::image::ImageRef;
use crate::registry::{Registries, RegistryLimit};

/// Pull time when no image rule matches (before `timeScale`).
pub const DEFAULT_PULL: Duration = Duration::from_secs(1);

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Multiplies every scenario duration (pull times, kubelet backoff); not event times.
    pub time_scale: f64,
    /// Every node to register, groups expanded.
    pub nodes: Vec<NodeSpec>,
    /// Timed events, sorted by `after`.
    pub events: Vec<TimedEvent>,
    /// Registries with a pull limit (their counts are shared by clones).
    pub registries: Registries,
    rules: Vec<ImageRule>,
    preloaded: Vec<Preload>,
    /// Tags moved by `moveTag` events (shared by clones).
    pub moved_tags: MovedTags,
}

/// Tags pushed anew while kube-sim runs: normalized `repo:tag` → the digest
/// it resolves to from then on. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MovedTags(Arc<Mutex<HashMap<String, String>>>);

impl MovedTags {
    /// From now on `image` (a tag) resolves to `digest`.
    pub fn move_to(&self, image: &ImageRef, digest: &str) {
        self.0
            .lock()
            .expect("moved tags lock")
            .insert(image.normalized(), digest.to_owned());
    }

    /// The digest `image` was last moved to, if it is a moved tag.
    pub fn digest_of(&self, image: &ImageRef) -> Option<String> {
        if image.digest().is_some() {
            return None;
        }
        self.0
            .lock()
            .expect("moved tags lock")
            .get(&image.normalized())
            .cloned()
    }
}

/// One simulated node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Labels in addition to the kubelet's well-known ones.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`.
    pub taints: Vec<TaintSpec>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Initial value of the `Ready` condition.
    pub ready: bool,
    /// CPU capacity (a Kubernetes quantity).
    pub cpu: String,
    /// Memory capacity (a Kubernetes quantity).
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Registered this long (real time) after the others are ready, instead
    /// of at start: a node joining mid-run.
    pub join_after: Option<Duration>,
    /// Allocatable `ephemeral-storage` (a Kubernetes quantity); capacity is
    /// the same. None: the default disk (about 100 GiB).
    pub ephemeral_storage: Option<String>,
    /// The `DiskPressure` condition is True (and the node carries the
    /// `node.kubernetes.io/disk-pressure:NoSchedule` taint).
    pub disk_pressure: bool,
}

/// A node taint as written in the scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    /// Taint key.
    pub key: String,
    /// Taint value (optional).
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// How pulling one image on one node behaves: the first matching rule, scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct PullPlan {
    /// How long one pull attempt takes (already multiplied by `timeScale`).
    pub duration: Duration,
    /// Which attempts fail.
    pub failures: Failures,
    /// Registry error text used in the `ErrImagePull` message.
    pub message: Option<String>,
    /// Fixed digest (`sha256:…`) instead of the derived one.
    pub digest: Option<String>,
    /// Reported image size, if fixed.
    pub size_bytes: Option<i64>,
}

/// Which pull attempts of an image on a node fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    /// Every attempt succeeds.
    None,
    /// The first `n` attempts per (node, image) fail, later ones succeed.
    First(u32),
    /// Every attempt fails.
    Always,
    /// The registry wants credentials: attempts of pods without
    /// `imagePullSecrets` fail with `401 Unauthorized`, the others succeed.
    Unauthorized,
}

impl Failures {
    /// Whether attempt number `attempt` (1-based, per node and image) of a
    /// pod with (`credentials`) or without pull secrets fails.
    pub fn fails(self, attempt: u32, credentials: bool) -> bool {
        match self {
            Failures::None => false,
            Failures::First(n) => attempt <= n,
            Failures::Always => true,
            Failures::Unauthorized => !credentials,
        }
    }
}

/// Something that happens at a fixed real time after kube-sim started.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedEvent {
    /// Real (unscaled) time after start.
    pub after: Duration,
    /// What happens.
    pub action: EventAction,
}

/// The action of a [`TimedEvent`]; node sets are globs on node names.
#[derive(Debug, Clone)]
pub enum EventAction {
    /// Delete the matching Node objects.
    DeleteNodes(GlobMatcher),
    /// Set the `Ready` condition of the matching nodes.
    SetReady(GlobMatcher, bool),
    /// Set (or clear) the `DiskPressure` condition of the matching nodes, with
    /// its `node.kubernetes.io/disk-pressure:NoSchedule` taint.
    SetDiskPressure(GlobMatcher, bool),
    /// Register these nodes (a group with `joinAfter`).
    AddNodes(Vec<String>),
    /// From now on a tag resolves to another digest (pushed anew).
    MoveTag(ImageRef, String),
}

impl PartialEq for EventAction {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (EventAction::DeleteNodes(a), EventAction::DeleteNodes(b)) => a.glob() == b.glob(),
            (EventAction::SetReady(a, x), EventAction::SetReady(b, y))
            | (EventAction::SetDiskPressure(a, x), EventAction::SetDiskPressure(b, y)) => {
                a.glob() == b.glob() && x == y
            }
            (EventAction::AddNodes(a), EventAction::AddNodes(b)) => a == b,
            (EventAction::MoveTag(a, x), EventAction::MoveTag(b, y)) => a == b && x == y,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct ImageRule {
    image: GlobMatcher,
    nodes: Option<GlobMatcher>,
    plan: PullPlan,
}

#[derive(Debug, Clone)]
struct Preload {
    image: ImageRef,
    nodes: Option<GlobMatcher>,
}

// ---- the file format ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScenarioFile {
    #[serde(default = "one")]
    time_scale: f64,
    #[serde(default)]
    nodes: Vec<NodeGroupFile>,
    #[serde(default)]
    images: Vec<ImageRuleFile>,
    #[serde(default)]
    preloaded: Vec<PreloadFile>,
    #[serde(default)]
    events: Vec<EventFile>,
    #[serde(default)]
    registries: Vec<RegistryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegistryFile {
    host: String,
    limit: u32,
    window: DurationText,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeGroupFile {
    name_prefix: Option<String>,
    count: Option<u32>,
    names: Option<Vec<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taints: Vec<TaintSpec>,
    #[serde(default)]
    unschedulable: bool,
    #[serde(default = "yes")]
    ready: bool,
    cpu: Option<String>,
    memory: Option<String>,
    pods: Option<u32>,
    join_after: Option<DurationText>,
    ephemeral_storage: Option<String>,
    #[serde(default)]
    disk_pressure: bool,
}

#[derive(Deserialize, Clone, Copy)]
enum FailKind {
    ErrImagePull,
    ImagePullBackOff,
    Unauthorized,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImageRuleFile {
    #[serde(rename = "match")]
    image: String,
    nodes: Option<String>,
    fail: Option<FailKind>,
    message: Option<String>,
    fail_times: Option<u32>,
    pull_seconds: Option<f64>,
    digest: Option<String>,
    size_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PreloadFile {
    image: String,
    nodes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventFile {
    after: DurationText,
    delete_nodes: Option<String>,
    set_ready: Option<SetReadyFile>,
    set_disk_pressure: Option<SetDiskPressureFile>,
    move_tag: Option<MoveTagFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SetDiskPressureFile {
    nodes: String,
    disk_pressure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MoveTagFile {
    image: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SetReadyFile {
    nodes: String,
    ready: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(f64),
    Text(String),
}

impl Scenario {
    /// Parses and validates scenario YAML. Unknown fields are rejected with a
    /// message naming the field and where it is.
    pub fn parse(yaml: &str) -> Result<Self> {
        let file: ScenarioFile =
            serde_saphyr::from_str(yaml).map_err(|e| Error::Scenario(e.to_string()))?;
        if !file.time_scale.is_finite() || file.time_scale < 0.0 {
            return Err(Error::Scenario(format!(
                "timeScale must be a non-negative number, got {}",
                file.time_scale
            )));
        }
        let mut nodes = Vec::new();
        let mut joins = Vec::new();
        for (i, g) in file.nodes.into_iter().enumerate() {
            let join_after = g.join_after.map(duration).transpose()?;
            let names: Vec<String> = match (g.names, g.count) {
                (Some(_), Some(_)) | (Some(_), None) if g.name_prefix.is_some() => {
                    return Err(Error::Scenario(format!(
                        "nodes[{i}]: use either names or namePrefix+count"
                    )))
                }
                (Some(_), Some(_)) => {
                    return Err(Error::Scenario(format!(
                        "nodes[{i}]: use either names or count"
                    )))
                }
                (Some(names), None) => names,
                (None, Some(count)) => {
                    let prefix = g.name_prefix.unwrap_or_else(|| "node-".to_string());
                    (0..count).map(|n| format!("{prefix}{n}")).collect()
                }
                (None, None) => {
                    return Err(Error::Scenario(format!("nodes[{i}]: needs names or count")))
                }
            };
            let names_len = names.len();
            for name in names {
                nodes.push(NodeSpec {
                    name,
                    labels: g.labels.clone(),
                    taints: g.taints.clone(),
                    unschedulable: g.unschedulable,
                    ready: g.ready,
                    cpu: g.cpu.clone().unwrap_or_else(|| "4".to_string()),
                    memory: g.memory.clone().unwrap_or_else(|| "16Gi".to_string()),
                    pods: g.pods.unwrap_or(110),
                    join_after,
                    ephemeral_storage: g.ephemeral_storage.clone(),
                    disk_pressure: g.disk_pressure,
                });
            }
            if let Some(after) = join_after {
                let group = nodes[nodes.len() - names_len..]
                    .iter()
                    .map(|n| n.name.clone())
                    .collect();
                joins.push(TimedEvent {
                    after,
                    action: EventAction::AddNodes(group),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for n in &nodes {
            if !seen.insert(n.name.as_str()) {
                return Err(Error::Scenario(format!(
                    "node {:?} is listed twice",
                    n.name
                )));
            }
        }
        let rules = file
            .images
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let failures = match (r.fail, r.fail_times) {
                    (Some(FailKind::Unauthorized), Some(_)) => {
                        return Err(Error::Scenario(format!(
                            "images[{i}]: failTimes does not combine with fail: Unauthorized"
                        )))
                    }
                    (_, Some(n)) => Failures::First(n),
                    (Some(FailKind::ErrImagePull | FailKind::ImagePullBackOff), None) => {
                        Failures::Always
                    }
                    (Some(FailKind::Unauthorized), None) => Failures::Unauthorized,
                    (None, None) => Failures::None,
                };
                let secs = r.pull_seconds.unwrap_or(DEFAULT_PULL.as_secs_f64());
                if !secs.is_finite() || secs < 0.0 {
                    return Err(Error::Scenario(format!(
                        "images[{i}].pullSeconds must be a non-negative number"
                    )));
                }
                if let Some(d) = &r.digest {
                    check_digest(&format!("images[{i}].digest"), d)?;
                }
                Ok(ImageRule {
                    image: glob(&r.image)?,
                    nodes: r.nodes.as_deref().map(glob).transpose()?,
                    plan: PullPlan {
                        duration: scale(Duration::from_secs_f64(secs), file.time_scale),
                        failures,
                        message: r.message,
                        digest: r.digest,
                        size_bytes: r.size_bytes,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let preloaded = file
            .preloaded
            .into_iter()
            .map(|p| {
                Ok(Preload {
                    image: ImageRef::parse(&p.image)
                        .map_err(|e| Error::Scenario(format!("preloaded image: {e}")))?,
                    nodes: p.nodes.as_deref().map(glob).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut events = file
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let after = duration(e.after)?;
                let action = match (e.delete_nodes, e.set_ready, e.set_disk_pressure, e.move_tag) {
                    (Some(n), None, None, None) => EventAction::DeleteNodes(glob(&n)?),
                    (None, Some(s), None, None) => EventAction::SetReady(glob(&s.nodes)?, s.ready),
                    (None, None, Some(d), None) => {
                        EventAction::SetDiskPressure(glob(&d.nodes)?, d.disk_pressure)
                    }
                    (None, None, None, Some(m)) => {
                        let image = ImageRef::parse(&m.image).map_err(|e| {
                            Error::Scenario(format!("events[{i}].moveTag.image: {e}"))
                        })?;
                        if image.digest().is_some() {
                            return Err(Error::Scenario(format!(
                                "events[{i}].moveTag.image must be a tag, not a digest"
                            )));
                        }
                        check_digest(&format!("events[{i}].moveTag.digest"), &m.digest)?;
                        EventAction::MoveTag(image, m.digest)
                    }
                    _ => {
                        return Err(Error::Scenario(format!(
                            "events[{i}]: needs exactly one of deleteNodes, setReady, setDiskPressure, moveTag"
                        )))
                    }
                };
                Ok(TimedEvent { after, action })
            })
            .collect::<Result<Vec<_>>>()?;
        events.extend(joins);
        events.sort_by_key(|e| e.after);
        let registries = file
            .registries
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let window = duration(r.window)?;
                if r.host.is_empty() || r.limit == 0 || window.is_zero() {
                    return Err(Error::Scenario(format!(
                        "registries[{i}]: needs a host, a limit of at least 1 and a window longer than 0"
                    )));
                }
                Ok(RegistryLimit {
                    host: r.host,
                    limit: r.limit,
                    window,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario {
            time_scale: file.time_scale,
            nodes,
            events,
            registries: Registries::new(registries),
            rules,
            preloaded,
            moved_tags: MovedTags::default(),
        })
    }

    /// `count` default nodes named `<prefix>0 …`: what `--nodes N` runs.
    pub fn uniform(count: u32, prefix: &str) -> Self {
        let yaml = format!("nodes: [{{namePrefix: {prefix:?}, count: {count}}}]");
        Scenario::parse(&yaml).expect("a uniform scenario always parses")
    }

    /// Multiplies `d` by `timeScale`.
    pub fn scaled(&self, d: Duration) -> Duration {
        scale(d, self.time_scale)
    }

    /// How pulling `image` on `node` behaves: the first rule whose `match` glob
    /// matches the reference (as written or normalized) and whose `nodes` glob, if
    /// any, matches the node; else a plain pull of [`DEFAULT_PULL`] × timeScale.
    /// A tag moved by a `moveTag` event resolves to its new digest.
    pub fn pull_plan(&self, node: &str, image: &ImageRef) -> PullPlan {
        let mut plan = self.rule_plan(node, image);
        if let Some(moved) = self.moved_tags.digest_of(image) {
            plan.digest = Some(moved);
        }
        plan
    }

    fn rule_plan(&self, node: &str, image: &ImageRef) -> PullPlan {
        let normalized = image.normalized();
        self.rules
            .iter()
            .find(|r| {
                (r.image.is_match(image.original()) || r.image.is_match(&normalized))
                    && r.nodes.as_ref().is_none_or(|n| n.is_match(node))
            })
            .map(|r| r.plan.clone())
            .unwrap_or_else(|| PullPlan {
                duration: self.scaled(DEFAULT_PULL),
                failures: Failures::None,
                message: None,
                digest: None,
                size_bytes: None,
            })
    }

    /// Images present on `node` from the start.
    pub fn preloaded_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a ImageRef> + 'a {
        self.preloaded
            .iter()
            .filter(move |p| p.nodes.as_ref().is_none_or(|g| g.is_match(node)))
            .map(|p| &p.image)
    }
}

/// Refuses a digest that is not `sha256:<64 hex digits>`.
fn check_digest(field: &str, d: &str) -> Result<()> {
    let ok = d
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::Scenario(format!(
            "{field} must be sha256:<64 hex digits>, got {d:?}"
        )))
    }
}

fn scale(d: Duration, factor: f64) -> Duration {
    Duration::from_secs_f64(d.as_secs_f64() * factor)
}

/// Compiles a glob in which `*` also matches `/`.
fn glob(pattern: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|source| Error::Glob {
            pattern: pattern.to_string(),
            source,
        })
}

/// A duration as written: a number of seconds or text for [`parse_duration`].
fn duration(text: DurationText) -> Result<Duration> {
    match text {
        DurationText::Seconds(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        DurationText::Seconds(s) => Err(Error::Duration(s.to_string())),
        DurationText::Text(t) => parse_duration(&t),
    }
}

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let bad = || Error::Duration(text.to_string());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
timeScale: 0.01
nodes:
  - namePrefix: node-
    count: 45
    labels: {workload: compute}
  - names: [gpu-0, gpu-1]
    labels: {workload: gpu}
    taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]
  - names: [cordoned-0]
    unschedulable: true
  - names: [down-0]
    ready: false
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "flaky/*"
    failTimes: 2
  - match: "*"
    nodes: "node-3"
    fail: ImagePullBackOff
  - match: "big/*"
    pullSeconds: 30
    digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  - match: "*"
    pullSeconds: 2
preloaded:
  - image: nginx:latest
    nodes: "node-1*"
events:
  - after: 20s
    setReady: {nodes: "node-5", ready: false}
  - after: 10s
    deleteNodes: "node-4*"
  - after: 500ms
    deleteNodes: "x"
"#;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn parses_the_documented_example() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        assert_eq!(s.nodes.len(), 45 + 2 + 1 + 1);
        assert_eq!(s.nodes[44].name, "node-44");
        assert_eq!(s.nodes[45].name, "gpu-0");
        assert_eq!(s.nodes[45].taints[0].key, "nvidia.com/gpu");
        assert!(s.nodes[47].unschedulable);
        assert!(!s.nodes[48].ready && s.nodes[0].ready);
        let afters: Vec<_> = s.events.iter().map(|e| e.after.as_millis()).collect();
        assert_eq!(afters, vec![500, 10_000, 20_000]);
    }

    #[test]
    fn first_matching_rule_wins_and_durations_scale() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        let p = s.pull_plan("node-0", &img("registry.example.com/missing/app:1"));
        assert_eq!(p.failures, Failures::Always);
        assert_eq!(p.message.as_deref(), Some("manifest unknown"));
        let p = s.pull_plan("node-0", &img("flaky/app"));
        assert_eq!(p.failures, Failures::First(2));
        // `*` matches `/`, and the node glob narrows the rule.
        let p = s.pull_plan("node-3", &img("big/model:v1"));
        assert_eq!(p.failures, Failures::Always);
        let p = s.pull_plan("node-30", &img("big/model:v1"));
        assert_eq!(p.failures, Failures::None);
        assert_eq!(p.duration, Duration::from_millis(300));
        assert!(p.digest.is_some());
        let p = s.pull_plan("node-0", &img("quay.io/a/b/c:d"));
        assert_eq!(p.duration, Duration::from_millis(20));
    }

    #[test]
    fn default_pull_is_one_second_scaled() {
        let s = Scenario::parse("timeScale: 0.5\nnodes: [{count: 1}]").unwrap();
        assert_eq!(
            s.pull_plan("node-0", &img("x")).duration,
            Duration::from_millis(500)
        );
        assert_eq!(s.nodes[0].name, "node-0");
    }

    #[test]
    fn preloaded_images_follow_their_node_glob() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        assert_eq!(s.preloaded_on("node-12").count(), 1);
        assert_eq!(s.preloaded_on("node-2").count(), 0);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let e = Scenario::parse("nodes: [{count: 1, lables: {a: b}}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `lables`"), "{e}");
        let e = Scenario::parse("timescale: 2").unwrap_err().to_string();
        assert!(e.contains("unknown field `timescale`"), "{e}");
        let e = Scenario::parse("images: [{match: x, failtimes: 2}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `failtimes`"), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(Scenario::parse("nodes: [{names: [a], count: 2}]").is_err());
        assert!(Scenario::parse("nodes: [{names: [a]}, {names: [a]}]").is_err());
        assert!(Scenario::parse("images: [{match: x, fail: Oops}]").is_err());
        assert!(Scenario::parse("events: [{after: 10x, deleteNodes: a}]").is_err());
        assert!(Scenario::parse("events: [{after: 1s}]").is_err());
        assert!(Scenario::parse("timeScale: -1").is_err());
        for bad in [
            "registries: [{host: docker.io, limit: 0, window: 1m}]",
            "registries: [{host: docker.io, limit: 1, window: 0s}]",
            "registries: [{host: '', limit: 1, window: 1m}]",
            "registries: [{host: docker.io, limit: 1}]",
        ] {
            assert!(Scenario::parse(bad).is_err(), "{bad}");
        }
        assert!(Scenario::parse("registries: [{host: docker.io, limit: 100, window: 6h}]").is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn disk_fields_and_moved_tags() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let s = Scenario::parse(&format!(
            r#"
nodes:
  - names: [small]
    ephemeralStorage: 1Gi
  - names: [full]
    diskPressure: true
images:
  - match: "example.com/app*"
    digest: "{d1}"
events:
  - after: 5s
    moveTag: {{image: "example.com/app:v1", digest: "{d2}"}}
  - after: 6s
    setDiskPressure: {{nodes: "sm*", diskPressure: true}}
  - after: 7s
    setDiskPressure: {{nodes: "small", diskPressure: false}}
"#
        ))
        .unwrap();
        let EventAction::SetDiskPressure(nodes, true) = &s.events[1].action else {
            panic!("{:?}", s.events[1]);
        };
        assert!(nodes.is_match("small") && !nodes.is_match("full"));
        assert!(matches!(
            s.events[2].action,
            EventAction::SetDiskPressure(_, false)
        ));
        assert_eq!(s.nodes[0].ephemeral_storage.as_deref(), Some("1Gi"));
        assert!(!s.nodes[0].disk_pressure && s.nodes[1].disk_pressure);
        let tag = img("example.com/app:v1");
        assert_eq!(s.pull_plan("small", &tag).digest.as_deref(), Some(&*d1));
        let EventAction::MoveTag(image, digest) = &s.events[0].action else {
            panic!("{:?}", s.events[0]);
        };
        s.clone().moved_tags.move_to(image, digest);
        assert_eq!(s.pull_plan("small", &tag).digest.as_deref(), Some(&*d2));
        let other = img("example.com/app:v2");
        assert_eq!(s.pull_plan("small", &other).digest.as_deref(), Some(&*d1));
        let pinned = img(&format!("example.com/app@{d1}"));
        assert_eq!(s.pull_plan("small", &pinned).digest.as_deref(), Some(&*d1));
        assert!(Scenario::parse(&format!(
            "events: [{{after: 1s, moveTag: {{image: \"a@{d1}\", digest: \"{d2}\"}}}}]"
        ))
        .is_err());
        assert!(
            Scenario::parse("events: [{after: 1s, moveTag: {image: a, digest: sha256:1}}]")
                .is_err()
        );
    }

    #[test]
    fn uniform_scenario() {
        let s = Scenario::uniform(3, "sim-a-");
        let names: Vec<_> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["sim-a-0", "sim-a-1", "sim-a-2"]);
    }
}
