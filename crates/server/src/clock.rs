//! Time, injected: the engine and scheduler read the clock through this
//! trait so tests can drive time by hand.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The wall clock shifted by an offset that may change while the service
/// runs (`--clock-offset-file`, for tests): a test steps the wall clock of a
/// running service without touching the machine's. Like a real step, it
/// leaves monotonic time (timeouts, intervals, backoff) alone.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// The current offset.
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Steps the clock to the system time plus `offset`.
    pub fn set_offset(&self, offset: chrono::Duration) {
        self.offset_ms
            .store(offset.num_milliseconds(), Ordering::Relaxed);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

/// Keeps `clock`'s offset at the whole seconds (signed) written in `path`
/// until `stop`: read at once, then whenever the file changes or on SIGHUP.
/// A missing or unparsable file leaves the offset as it is.
pub async fn follow_offset_file(clock: Arc<OffsetClock>, path: PathBuf, stop: CancellationToken) {
    let mut watch = crate::file_watch::FileWatch::new(vec![path.clone()]).await;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => match text.trim().parse::<i64>() {
                Ok(seconds) => {
                    let offset = chrono::Duration::seconds(seconds);
                    if offset != clock.offset() {
                        clock.set_offset(offset);
                        tracing::warn!(
                            offset_seconds = seconds,
                            file = %path.display(),
                            "wall clock offset changed"
                        );
                    }
                }
                Err(err) => tracing::warn!(
                    file = %path.display(),
                    error = %err,
                    "clock offset file holds no whole number of seconds; offset kept"
                ),
            },
            Err(err) => tracing::warn!(
                file = %path.display(),
                error = %err,
                "clock offset file unreadable; offset kept"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = watch.changed() => {}
        }
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }

    /// Sets the clock.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_offset_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        std::fs::write(&path, "-3600\n").unwrap();
        let clock = Arc::new(OffsetClock::default());
        let stop = CancellationToken::new();
        let follow = tokio::spawn(follow_offset_file(
            clock.clone(),
            path.clone(),
            stop.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while clock.offset() != chrono::Duration::hours(-1) {
            assert!(tokio::time::Instant::now() < deadline, "offset not read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let behind = Utc::now() - clock.now();
        assert!(behind >= chrono::Duration::minutes(59), "{behind}");
        std::fs::write(&path, "7200").unwrap();
        while clock.offset() != chrono::Duration::hours(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "change not followed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::write(&path, "soon").unwrap();
        stop.cancel();
        follow.await.unwrap();
        assert_eq!(clock.offset(), chrono::Duration::hours(2));
    }
}
