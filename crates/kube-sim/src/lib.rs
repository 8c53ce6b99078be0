//! kube-sim: simulated kubelets against a real kube-apiserver.
//!
//! It registers Node objects that look like a kubelet's and plays the kubelet
//! for every pod bound to them (image pulls with the kubelet's failure reasons
//! and backoff, containers that exit 0, deletion, `activeDeadlineSeconds`).
//!
//! - [`scenario`]: the scenario file (nodes, image rules, preloaded images, events);
//! - [`kubelet`]: the pod lifecycle as a pure, clock-injected state machine;
//! - [`image`]: image references normalized as containerd reports them;
//! - [`node`]: the Node object a kubelet registers;
//! - [`registry`]: registries with a pull limit answering `429 toomanyrequests`;
//! - [`sim`]: the running simulator (watch, timers, API writes);
//! - [`testing`]: a local control plane and a kube-sim process for integration tests.

pub mod error;
pub mod image;
pub mod kubelet;
pub mod node;
pub mod registry;
pub mod scenario;
pub mod sim;
pub mod testing;

pub use error::{Error, Result};
pub use scenario::Scenario;
