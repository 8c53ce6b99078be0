//! A real `redis-server` for tests: started on a unix socket in its own
//! temporary directory, stopped (by its PID) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisConfig, RedisStore};

/// A running `redis-server` owned by one test.
pub(crate) struct RedisServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with persistence off and waits until it answers.
    pub(crate) async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs it)");
        let server = RedisServer {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.socket.exists() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server
    }

    /// `unix://` URL of the server.
    pub(crate) fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A store on this server under `prefix`.
    pub(crate) async fn store(&self, prefix: &str, replica: &str) -> RedisStore {
        let config = RedisConfig {
            url: self.url(),
            password: None,
            prefix: prefix.into(),
            replica: replica.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match RedisStore::connect(&config).await {
                Ok(store) => return store,
                Err(err) => assert!(Instant::now() < deadline, "redis: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A fresh server and a store on it, for the contract suites.
    pub(crate) async fn with_store() -> (RedisStore, RedisServer) {
        let server = RedisServer::start().await;
        let store = server.store("prewarm:", "test").await;
        (store, server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
