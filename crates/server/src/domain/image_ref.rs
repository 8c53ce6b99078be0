//! Container image references: the one parser of the project
//! (`prewarm-image-ref`, shared with kube-sim and, through its test cases,
//! the web UI's check).

pub use prewarm_image_ref::{matches_node_image, ImageRef, ImageRefError};
