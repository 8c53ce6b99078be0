//! The `kubectl-prewarm` binary itself (the server side is covered by the
//! service's `clients` integration tests): usage errors, an unreachable
//! server, completions.

use std::process::{Command, Output};

fn plugin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-prewarm"))
        .args(args)
        .env_remove("PREWARM_SERVER")
        .env_remove("PREWARM_TOKEN")
        .output()
        .expect("run kubectl-prewarm")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    let out = plugin(&["task", "create"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<IMAGE>"), "{}", stderr(&out));
    let out = plugin(&["task", "list", "-o", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = plugin(&["task", "list", "--server", "localhost:8080"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("http:// or https://"));
}

#[test]
fn an_unreachable_server_exits_4() {
    for args in [
        &["task", "list", "--server", "http://127.0.0.1:1"][..],
        &[
            "task",
            "watch",
            "task-20240101-abcdef",
            "--server",
            "http://127.0.0.1:1",
        ][..],
        &["schedule", "list", "--server", "http://127.0.0.1:1"][..],
    ] {
        let out = plugin(args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("cannot reach the prewarm server at http://127.0.0.1:1"));
    }
}

#[test]
fn completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = plugin(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("kubectl-prewarm"), "{shell}");
        assert!(
            script.contains("executions"),
            "{shell}: schedule subcommands missing"
        );
    }
}
