//! Pure logic without I/O: validated task specs, image references, label
//! rules, the per-node pull state machine and learned node speeds.

pub mod coverage;
pub mod image_ref;
pub mod keep_warm;
pub mod labels;
pub mod node_pull;
pub mod node_speed;
pub mod pacing;
pub mod placement;
pub mod plan;
pub mod schedule;
pub mod selection;
pub mod task;
pub mod webhook_target;
