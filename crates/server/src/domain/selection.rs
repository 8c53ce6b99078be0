//! Which nodes a task pulls on, and why the others are left out.
//!
//! The engine (when a task starts), dry-run plans and keep-warm policies all
//! select through [`select_nodes`] / [`classify`], so a plan never disagrees
//! with the run that follows it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::cluster::NodeInfo;
use crate::domain::placement;
use crate::domain::task::TaskSpec;

/// Why a node that matches a task's targeting is not pulled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// The `Ready` condition is not True.
    NotReady,
    /// `spec.unschedulable` (cordoned).
    Cordoned,
    /// Carries a NoSchedule/NoExecute taint the task does not tolerate.
    Tainted,
}

impl Exclusion {
    /// The wire name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::NotReady => "NotReady",
            Exclusion::Cordoned => "Cordoned",
            Exclusion::Tainted => "Tainted",
        }
    }
}

/// How one node stands against a task's targeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Outside `nodeSelector` / `nodeNames`: not a candidate at all.
    Unmatched,
    /// A candidate left out for this reason.
    Excluded(Exclusion),
    /// Pulled on.
    Selected,
}

/// Matches `nodeSelector` (exact labels), `nodeNames` and, for a task from a
/// workload, where its pod could be scheduled (node selector, required node
/// affinity, tolerations against taints), all by AND.
pub struct Targeting<'a> {
    spec: &'a TaskSpec,
    names: HashSet<&'a str>,
}

impl<'a> Targeting<'a> {
    /// The targeting of `spec`.
    pub fn new(spec: &'a TaskSpec) -> Targeting<'a> {
        Targeting {
            spec,
            names: spec.node_names.iter().map(String::as_str).collect(),
        }
    }

    /// How `node` stands.
    pub fn classify(&self, node: &NodeInfo) -> Fit {
        let spec = self.spec;
        let matched = spec
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && (self.names.is_empty() || self.names.contains(node.name.as_str()))
            && spec
                .workload
                .as_ref()
                .is_none_or(|w| placement::affinity_admits(w, node));
        let tainted = match &spec.workload {
            Some(w) => !placement::tolerates(w, node),
            None => node.tainted && !spec.tolerate_taints,
        };
        if !matched {
            Fit::Unmatched
        } else if !node.ready {
            Fit::Excluded(Exclusion::NotReady)
        } else if node.unschedulable {
            Fit::Excluded(Exclusion::Cordoned)
        } else if tainted {
            Fit::Excluded(Exclusion::Tainted)
        } else {
            Fit::Selected
        }
    }
}

/// How `node` stands against `spec` (for one node; build a [`Targeting`] for many).
pub fn classify(node: &NodeInfo, spec: &TaskSpec) -> Fit {
    Targeting::new(spec).classify(node)
}

/// Nodes a task pulls on: selector ∧ names, Ready, not cordoned, taints per spec; sorted by name.
pub fn select_nodes<'a>(nodes: &'a [NodeInfo], spec: &TaskSpec) -> Vec<&'a NodeInfo> {
    let targeting = Targeting::new(spec);
    let mut selected: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| targeting.classify(n) == Fit::Selected)
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    selected
}

/// Skip reason of a selected node whose kubelet reports `DiskPressure`.
pub const DISK_PRESSURE: &str = "DiskPressure";
/// Skip reason of a selected node whose disk cannot take the task's images.
pub const INSUFFICIENT_DISK: &str = "InsufficientDisk";
/// Message of a `DiskPressure` skip.
pub const DISK_PRESSURE_MESSAGE: &str = "the kubelet reports DiskPressure";

/// Room kept free beyond the images a node is to pull, as a percentage of
/// their sizes (`--disk-margin`, default 10%).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskMargin(u32);

impl DiskMargin {
    /// Largest margin accepted.
    pub const MAX_PERCENT: u32 = 1000;

    /// A margin of `percent` (at most [`DiskMargin::MAX_PERCENT`]).
    pub fn percent(percent: u32) -> Option<DiskMargin> {
        (percent <= Self::MAX_PERCENT).then_some(DiskMargin(percent))
    }

    /// `bytes` plus the margin.
    fn with_margin(self, bytes: u64) -> u64 {
        bytes.saturating_add(bytes.saturating_mul(u64::from(self.0)) / 100)
    }
}

impl Default for DiskMargin {
    fn default() -> DiskMargin {
        DiskMargin(10)
    }
}

impl fmt::Display for DiskMargin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl FromStr for DiskMargin {
    type Err = String;

    /// `10%` or `10`.
    fn from_str(s: &str) -> Result<DiskMargin, String> {
        let digits = s.trim().trim_end_matches('%');
        digits
            .parse::<u32>()
            .ok()
            .and_then(DiskMargin::percent)
            .ok_or_else(|| {
                format!(
                    "expected a percentage from 0% to {}%, got {s:?}",
                    DiskMargin::MAX_PERCENT
                )
            })
    }
}

/// Why a selected node is skipped for its disk instead of pulled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSkip {
    /// [`DISK_PRESSURE`] or [`INSUFFICIENT_DISK`].
    pub reason: &'static str,
    /// What the user reads, with the numbers behind it.
    pub message: String,
}

/// The disk preflight of one task: its images' sizes as other nodes report
/// them in `status.images`, and the margin.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskCheck {
    /// Per task image, its size where some node reports it.
    sizes: Vec<Option<u64>>,
    margin: DiskMargin,
}

impl DiskCheck {
    /// Learns the sizes of `spec`'s images from every node's reported images
    /// (names as the kubelet reports them: fully qualified).
    pub fn new(nodes: &[NodeInfo], spec: &TaskSpec, margin: DiskMargin) -> DiskCheck {
        let wanted: HashMap<String, usize> = spec
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| (image.normalized(), i))
            .collect();
        let mut sizes = vec![None; spec.images.len()];
        let mut unknown = sizes.len();
        'nodes: for node in nodes {
            for (name, &size) in node.images.iter().zip(&node.image_sizes) {
                let Some(&i) = wanted.get(name) else {
                    continue;
                };
                if size > 0 && sizes[i].is_none() {
                    sizes[i] = Some(size);
                    unknown -= 1;
                    if unknown == 0 {
                        break 'nodes;
                    }
                }
            }
        }
        DiskCheck { sizes, margin }
    }

    /// Why `node` is skipped, if it is: `DiskPressure`, or `InsufficientDisk`
    /// when its allocatable ephemeral-storage minus its reported images is
    /// below the known sizes of the images it lacks (`present[i]` false) plus
    /// the margin. Unknown sizes and an unreported disk pass.
    pub fn skip(&self, node: &NodeInfo, present: &[bool]) -> Option<DiskSkip> {
        if node.disk_pressure {
            return Some(DiskSkip {
                reason: DISK_PRESSURE,
                message: DISK_PRESSURE_MESSAGE.to_owned(),
            });
        }
        let allocatable = node.ephemeral_storage?;
        let new_bytes: u64 = self
            .sizes
            .iter()
            .enumerate()
            .filter(|(i, _)| !present.get(*i).copied().unwrap_or(false))
            .filter_map(|(_, size)| *size)
            .sum();
        if new_bytes == 0 {
            return None;
        }
        let needed = self.margin.with_margin(new_bytes);
        let free = allocatable.saturating_sub(node.images_bytes);
        (free < needed).then(|| DiskSkip {
            reason: INSUFFICIENT_DISK,
            message: format!(
                "needs {} (images {} + {} margin), has {} (allocatable ephemeral-storage {} - images {})",
                bytes(needed),
                bytes(new_bytes),
                self.margin,
                bytes(free),
                bytes(allocatable),
                bytes(node.images_bytes),
            ),
        })
    }
}

/// A size for people: GiB with two decimals, MiB with one below a GiB.
fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= 1024.0 * MIB {
        format!("{:.2} GiB", n / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node_with_images, GIB};
    use prewarm_api::CreateTaskRequest;

    fn node(name: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            ready: true,
            ..NodeInfo::default()
        }
    }

    fn spec(body: serde_json::Value) -> TaskSpec {
        let req: CreateTaskRequest = serde_json::from_value(body).unwrap();
        TaskSpec::from_request(req).unwrap()
    }

    #[test]
    fn disk_pressure_and_too_small_disks_are_skipped_with_both_numbers() {
        let s = spec(serde_json::json!({"images": ["big/model:1", "nginx:1.25", "unknown:1"]}));
        // Sizes come from other nodes' status.images (names as the kubelet reports them).
        let donor = node_with_images(
            "donor",
            &[
                ("docker.io/big/model:1", 2 * GIB),
                ("docker.io/big/model@sha256:aa", 2 * GIB),
                ("docker.io/library/nginx:1.25", GIB / 2),
            ],
        );
        let mut pressure = node("pressure", "z1");
        pressure.disk_pressure = true;
        let mut small = node_with_images("small", &[("docker.io/library/redis:7", GIB)]);
        small.ephemeral_storage = Some(3 * GIB);
        let mut roomy = node("roomy", "z1");
        roomy.ephemeral_storage = Some(100 * GIB);
        let mut unreported = node("unreported", "z1");
        unreported.ephemeral_storage = None;
        let nodes = vec![
            donor.clone(),
            pressure.clone(),
            small.clone(),
            roomy.clone(),
        ];
        let check = DiskCheck::new(&nodes, &s, DiskMargin::default());

        let skip = check.skip(&pressure, &[false, false, false]).unwrap();
        assert_eq!(skip.reason, "DiskPressure");
        // 2.5 GiB of new images + 10% = 2.75 GiB > 3 GiB - 1 GiB of images.
        let skip = check.skip(&small, &[false, false, false]).unwrap();
        assert_eq!(skip.reason, "InsufficientDisk");
        assert_eq!(
            skip.message,
            "needs 2.75 GiB (images 2.50 GiB + 10% margin), has 2.00 GiB \
             (allocatable ephemeral-storage 3.00 GiB - images 1.00 GiB)"
        );
        // Images it holds already need no room: 0.5 GiB + 10% fits in 2 GiB.
        assert_eq!(check.skip(&small, &[true, false, false]), None);
        assert_eq!(check.skip(&roomy, &[false, false, false]), None);
        assert_eq!(check.skip(&unreported, &[false, false, false]), None);
        // A margin of 0 lets 2.5 GiB be judged against exactly 2.5 GiB free.
        let mut exact = small.clone();
        exact.ephemeral_storage = Some(3 * GIB + GIB / 2);
        let no_margin = DiskCheck::new(&nodes, &s, DiskMargin::percent(0).unwrap());
        assert_eq!(no_margin.skip(&exact, &[false, false, false]), None);
        assert!(check.skip(&exact, &[false, false, false]).is_some());
        // With no size known anywhere, nothing is judged.
        let blind = DiskCheck::new(&[small.clone()], &s, DiskMargin::default());
        assert_eq!(blind.skip(&small, &[false, false, false]), None);
    }

    #[test]
    fn disk_margins_parse_as_percentages() {
        assert_eq!("10%".parse::<DiskMargin>(), Ok(DiskMargin::default()));
        assert_eq!("25".parse::<DiskMargin>(), Ok(DiskMargin(25)));
        assert_eq!("0%".parse::<DiskMargin>().unwrap().to_string(), "0%");
        assert!("-5%".parse::<DiskMargin>().is_err());
        assert!("1001%".parse::<DiskMargin>().is_err());
        assert!("ten".parse::<DiskMargin>().is_err());
    }

    #[test]
    fn each_exclusion_is_named_and_unmatched_nodes_are_not_candidates() {
        let mut not_ready = node("b", "z1");
        not_ready.ready = false;
        let mut cordoned = node("c", "z1");
        cordoned.unschedulable = true;
        let mut tainted = node("d", "z1");
        tainted.tainted = true;
        let nodes = vec![
            node("e", "z1"),
            not_ready,
            cordoned,
            tainted,
            node("a", "z2"),
        ];
        let s = spec(
            serde_json::json!({"images": ["nginx"], "nodeSelector": {"zone": "z1"}, "tolerateTaints": false}),
        );
        let fits: Vec<Fit> = nodes.iter().map(|n| classify(n, &s)).collect();
        assert_eq!(
            fits,
            vec![
                Fit::Selected,
                Fit::Excluded(Exclusion::NotReady),
                Fit::Excluded(Exclusion::Cordoned),
                Fit::Excluded(Exclusion::Tainted),
                Fit::Unmatched
            ]
        );
        let names: Vec<&str> = select_nodes(&nodes, &s)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["e"]);
        let tolerant =
            spec(serde_json::json!({"images": ["nginx"], "nodeSelector": {"zone": "z1"}}));
        let names: Vec<&str> = select_nodes(&nodes, &tolerant)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["d", "e"]);
    }
}
