//! The cost of `GET /api/v1/coverage`'s computation at N nodes × M images
//! each, without a cluster: the endpoint's own `coverage()` over N nodes
//! shaped like the node cache's, all M images asked.
//!
//! ```sh
//! cargo bench --profile dev -p prewarm --bench coverage -- --nodes 5000 --images 50
//! ```
//!
//! Prints, side by side in one run, the first request (an empty key cache:
//! every reported name parsed, as every request did before the cache), the
//! requests after it (p50, p95), and one after a tenth of the nodes changed
//! their image lists (only those parsed again).

mod common;
use common::percentile;

use std::time::Instant;

use prewarm::cluster::NodeInfo;
use prewarm::domain::coverage::{coverage, ImageKeyCache};
use prewarm::domain::image_ref::ImageRef;

#[derive(clap::Parser)]
#[command(about = "Coverage computation cost at N nodes × M images")]
struct Args {
    /// Nodes (all Ready, all matching).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Images each node reports, all asked (the kubelet lists at most 50).
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Requests timed with a warm cache.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

/// A node as the cache shows it: a tag and a digest name per image.
fn node(i: usize, images: &[String]) -> NodeInfo {
    NodeInfo {
        name: format!("node-{i:05}"),
        labels: [("pool".to_owned(), format!("pool-{}", i % 10))].into(),
        ready: true,
        images: images
            .iter()
            .flat_map(|image| {
                let repo = image.split(':').next().unwrap_or_default();
                [
                    format!("registry.example.com/{image}"),
                    format!("registry.example.com/{repo}@sha256:{:064x}", i),
                ]
            })
            .collect(),
        ..NodeInfo::default()
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let names: Vec<String> = (0..args.images)
        .map(|i| format!("team/service-{i}:2024.01.{:02}", i % 28 + 1))
        .collect();
    let mut nodes: Vec<NodeInfo> = (0..args.nodes).map(|i| node(i, &names)).collect();
    let asked: Vec<ImageRef> = names
        .iter()
        .map(|n| ImageRef::parse(&format!("registry.example.com/{n}")).unwrap())
        .collect();
    let selector = Default::default();
    let cache = ImageKeyCache::new();

    let t = Instant::now();
    let first = coverage(&nodes, &asked, &selector, Some("pool"), &cache);
    let cold = ms(t);
    assert_eq!(first.percentage, 100.0);
    let mut warm = Vec::new();
    for _ in 0..args.requests {
        let t = Instant::now();
        let again = coverage(&nodes, &asked, &selector, Some("pool"), &cache);
        warm.push(ms(t));
        assert_eq!(again, first);
    }
    warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for n in nodes.iter_mut().step_by(10) {
        n.images.pop();
        n.images.pop();
    }
    let t = Instant::now();
    let changed = coverage(&nodes, &asked, &selector, Some("pool"), &cache);
    let tenth = ms(t);
    assert!(changed.percentage < 100.0);

    println!(
        "coverage {} images × {} nodes ({} reported names each), debug={}",
        asked.len(),
        args.nodes,
        nodes[1].images.len(),
        cfg!(debug_assertions)
    );
    println!("first request, empty key cache (every name parsed): {cold:.1} ms");
    println!(
        "warm cache: p50={:.1} ms p95={:.1} ms (n={})",
        percentile(&warm, 0.5),
        percentile(&warm, 0.95),
        warm.len()
    );
    println!("after a tenth of the nodes changed their images: {tenth:.1} ms");
    println!("cold ÷ warm p50 = {:.1}", cold / percentile(&warm, 0.5));
}
