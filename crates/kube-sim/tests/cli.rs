//! The binary's command line, without a cluster: bad scenarios fail fast.

use std::process::Command;

#[test]
fn unknown_scenario_field_is_named_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    std::fs::write(
        &path,
        "nodes:\n  - namePrefix: a-\n    count: 1\n    lables: {x: y}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .arg("--kubeconfig")
        .arg(dir.path().join("no-such-kubeconfig"))
        .arg("--scenario")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `lables`"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
}

#[test]
fn nodes_or_scenario_is_required() {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--kubeconfig", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
