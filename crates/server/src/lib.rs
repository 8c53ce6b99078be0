//! The prewarm service: an HTTP API that turns "these images on those nodes"
//! into rolling pull Jobs on Kubernetes, tracks every (node, image) pull and
//! reports progress.
//!
//! Layout: `domain` is pure logic, `store` and `cluster` are the two I/O
//! boundaries (traits with adapters), `engine` drives tasks through them, and
//! `http` only parses requests and calls the store or the engine handle.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod file_watch;
pub mod history;
pub mod http;
pub mod leadership;
pub mod metrics;
pub mod process_metrics;
pub mod progress;
pub mod startup;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod webhook;
