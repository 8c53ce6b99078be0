//! One crypto stack for every TLS client: rustls with ring, the backend kube
//! uses too. reqwest is built without a provider of its own
//! (`rustls-no-provider`), so ring becomes the process-wide provider before
//! the first HTTP client is built.

use std::sync::Once;
use std::time::Duration;

/// How long an idle kept-alive connection stays pooled: less than the
/// server's header-read timeout (10 s by default), which also closes an
/// HTTP/1.1 connection waiting for its next request, so a request never goes
/// out on a connection the server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs ring as rustls' process-wide crypto provider (once; later calls do nothing).
pub fn install_ring_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed; ring is the only one compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `reqwest::Client::builder()`, with the ring provider in place and idle
/// connections pooled for [`POOL_IDLE_TIMEOUT`].
#[allow(clippy::disallowed_methods)] // the one place clients are built from
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_ring_provider();
    reqwest::Client::builder().pool_idle_timeout(POOL_IDLE_TIMEOUT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_build_on_ring() {
        super::http_client_builder().build().unwrap();
        let provider = rustls::crypto::CryptoProvider::get_default().unwrap();
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            format!("{:?}", provider.cipher_suites),
            format!("{:?}", ring.cipher_suites)
        );
    }
}
