//! Image coverage: which of the matching nodes report which images.
//!
//! Each node's image names are parsed into match keys (normalized
//! repository plus tag, or plus digest) once per version of its image list
//! and kept, hashed, in an [`ImageKeyCache`]: a request costs a hash of each
//! node's names, not a parse of each, whatever the number of asked images.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use prewarm_api::{Coverage, CoverageGroup, ImageCoverage, NodeCoverage};

use super::image_ref::ImageRef;
use crate::cluster::NodeInfo;

/// Images the kubelet lists per node at most (`--node-status-max-images`).
pub const KUBELET_IMAGE_CAP: usize = 50;

/// The key an asked image must find among a node's keys: `name@digest` when
/// it has a digest, else `name:tag` (`latest` when it names neither), the
/// same rule as [`super::image_ref::matches_node_image`].
fn wanted_key(image: &ImageRef) -> String {
    let name = image.normalized_name();
    match (image.digest(), image.tag()) {
        (Some(digest), _) => format!("{name}@{digest}"),
        (None, Some(tag)) => format!("{name}:{tag}"),
        (None, None) => format!("{name}:latest"),
    }
}

/// Every key one reported name satisfies.
fn node_keys(names: &[String]) -> HashSet<String> {
    let mut keys = HashSet::new();
    for image in names.iter().filter_map(|n| ImageRef::parse(n).ok()) {
        let name = image.normalized_name();
        if let Some(digest) = image.digest() {
            keys.insert(format!("{name}@{digest}"));
        }
        match (image.tag(), image.digest()) {
            (Some(tag), _) => {
                keys.insert(format!("{name}:{tag}"));
            }
            (None, None) => {
                keys.insert(format!("{name}:latest"));
            }
            (None, Some(_)) => {}
        }
    }
    keys
}

/// A stable 64-bit hash (SipHash with fixed keys).
fn hash_of(value: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A node's match keys, hashed and sorted (8 bytes per key).
type KeySet = Arc<[u64]>;

/// Each node's image match keys, computed once per version of its image
/// list (the kubelet rewrites it only when images come or go) and dropped
/// when the node is gone.
#[derive(Debug, Default)]
pub struct ImageKeyCache {
    /// Node name → (hash of its image names, their keys).
    nodes: Mutex<HashMap<String, (u64, KeySet)>>,
}

impl ImageKeyCache {
    /// An empty cache.
    pub fn new() -> ImageKeyCache {
        ImageKeyCache::default()
    }

    /// The keys of every node in `nodes`, in order.
    fn keys_of(&self, nodes: &[&NodeInfo]) -> Vec<KeySet> {
        let mut cache = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .map(|node| {
                let version = hash_of(&node.images);
                match cache.get(&node.name) {
                    Some((v, keys)) if *v == version => keys.clone(),
                    _ => {
                        let mut keys: Vec<u64> =
                            node_keys(&node.images).iter().map(hash_of).collect();
                        keys.sort_unstable();
                        let keys: KeySet = keys.into();
                        cache.insert(node.name.clone(), (version, keys.clone()));
                        keys
                    }
                }
            })
            .collect()
    }

    /// Forgets the nodes that are not in `nodes` (the cluster's now).
    pub fn forget_others(&self, nodes: &[NodeInfo]) {
        let current: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| current.contains(name.as_str()));
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no node is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// Coverage of `images` over the Ready nodes matching `selector` (exact
/// labels), optionally summarized per value of the `group_by` label; node
/// keys come from `cache`.
pub fn coverage(
    nodes: &[NodeInfo],
    images: &[ImageRef],
    selector: &BTreeMap<String, String>,
    group_by: Option<&str>,
    cache: &ImageKeyCache,
) -> Coverage {
    let wanted: Vec<u64> = images.iter().map(|i| hash_of(wanted_key(i))).collect();
    let mut matching: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    let ready: Vec<&NodeInfo> = matching.iter().copied().filter(|n| n.ready).collect();
    let mut keys = cache.keys_of(&ready).into_iter();

    let mut out = Coverage {
        images: images
            .iter()
            .map(|i| ImageCoverage {
                image: i.as_str().to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    // value → (nodes, warm nodes, pairs present)
    let mut groups: BTreeMap<String, (u32, u32, u64)> = BTreeMap::new();
    let mut present_pairs = 0u64;
    for node in matching {
        if !node.ready {
            out.not_ready_nodes += 1;
            continue;
        }
        out.total_nodes += 1;
        if node.images.len() >= KUBELET_IMAGE_CAP {
            out.nodes_at_image_cap += 1;
        }
        let keys = keys.next().unwrap_or_default();
        let mut missing = Vec::new();
        let mut present = 0u64;
        for ((key, image), cov) in wanted.iter().zip(images).zip(out.images.iter_mut()) {
            if keys.binary_search(key).is_ok() {
                cov.nodes_with_image += 1;
                present += 1;
            } else {
                missing.push(image.as_str().to_owned());
            }
        }
        present_pairs += present;
        if let Some(label) = group_by {
            let value = node.labels.get(label).cloned().unwrap_or_default();
            let g = groups.entry(value).or_default();
            g.0 += 1;
            g.1 += u32::from(missing.is_empty());
            g.2 += present;
        }
        out.nodes.push(NodeCoverage {
            node_name: node.name.clone(),
            missing,
        });
    }
    let total = u64::from(out.total_nodes);
    for cov in &mut out.images {
        cov.percentage = percent(u64::from(cov.nodes_with_image), total);
    }
    out.percentage = percent(present_pairs, total * images.len() as u64);
    out.groups = groups
        .into_iter()
        .map(|(value, (nodes, warm, present))| CoverageGroup {
            value,
            nodes,
            warm_nodes: warm,
            percentage: percent(present, u64::from(nodes) * images.len() as u64),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::image_ref::matches_node_image;

    fn node(name: &str, zone: &str, images: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: [
                ("pool".to_owned(), "web".to_owned()),
                ("zone".to_owned(), zone.to_owned()),
            ]
            .into(),
            ready: true,
            images: images.iter().map(|s| s.to_string()).collect(),
            ..NodeInfo::default()
        }
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digest_aware_per_image_per_node_and_per_group() {
        let pinned = format!("docker.io/library/redis@{DIGEST}");
        let mut down = node("n4", "b", &[]);
        down.ready = false;
        let nodes = vec![
            node("n1", "a", &["docker.io/library/nginx:1.25", &pinned]),
            node("n2", "a", &["docker.io/library/nginx:1.24"]),
            node("n3", "b", &["nginx:1.25"]),
            down,
        ];
        let images: Vec<ImageRef> = ["nginx:1.25", &format!("redis@{DIGEST}")]
            .iter()
            .map(|s| ImageRef::parse(s).unwrap())
            .collect();
        let selector = [("pool".to_owned(), "web".to_owned())].into();
        let cache = ImageKeyCache::new();
        let c = coverage(&nodes, &images, &selector, Some("zone"), &cache);
        assert_eq!(cache.len(), 3, "the Ready matching nodes");
        assert_eq!(
            coverage(&nodes, &images, &selector, Some("zone"), &cache),
            c
        );
        // A node whose image list changed is read again.
        let mut later = nodes.clone();
        later[1].images.push("nginx:1.25".to_owned());
        let c2 = coverage(&later, &images, &selector, Some("zone"), &cache);
        assert_eq!(c2.images[0].nodes_with_image, 3);
        assert_eq!(c.total_nodes, 3);
        assert_eq!(c.not_ready_nodes, 1);
        assert_eq!(c.images[0].nodes_with_image, 2);
        assert_eq!(c.images[0].percentage, 66.7);
        assert_eq!(c.images[1].nodes_with_image, 1);
        assert_eq!(c.percentage, 50.0);
        assert_eq!(c.nodes[0].missing, Vec::<String>::new());
        assert_eq!(c.nodes[1].missing.len(), 2, "1.24 is not 1.25");
        assert_eq!(c.groups.len(), 2);
        assert_eq!(
            (
                c.groups[0].nodes,
                c.groups[0].warm_nodes,
                c.groups[0].percentage
            ),
            (2, 1, 50.0)
        );
        // The same verdicts as the engine's per-pair rule.
        for (n, cov) in nodes.iter().zip(&c.nodes) {
            for image in &images {
                assert_eq!(
                    matches_node_image(image, &n.images),
                    !cov.missing.contains(&image.as_str().to_owned())
                );
            }
        }
        let empty = coverage(&[], &images, &selector, None, &cache);
        assert_eq!(empty.percentage, 0.0, "no node is no coverage");
        cache.forget_others(&later[..1]);
        assert_eq!(cache.len(), 1, "gone nodes are forgotten");
    }
}
