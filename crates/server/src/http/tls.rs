//! HTTPS: rustls with the ring provider, serving the certificate chain and
//! key of `--tls-cert` / `--tls-key`. The files are watched (see
//! [`crate::file_watch`]); a changed pair is loaded and used for every new
//! handshake, so cert-manager's rotation needs no restart. A pair that does
//! not load (half-written, key not matching) is logged and the one in force
//! is kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate in force, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl ReloadingCert {
    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

/// Reads and checks the pair (the key must belong to the leaf certificate).
pub async fn load(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let cert = read(&files.cert).await?;
    let key = read(&files.key).await?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the certificates in {}", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        files.cert.display()
    );
    // The key's bytes never reach an error message.
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|_| anyhow::anyhow!("{} holds no PEM private key", files.key.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

async fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))
}

/// Loads the pair and builds the acceptor; the returned resolver is what
/// [`watch`] updates.
pub async fn acceptor(files: &TlsFiles) -> anyhow::Result<(TlsAcceptor, Arc<ReloadingCert>)> {
    let resolver = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(load(files).await?)),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), resolver))
}

/// Reloads the pair whenever either file changes (and on SIGHUP).
pub async fn watch(resolver: Arc<ReloadingCert>, files: TlsFiles) {
    let paths = vec![files.cert.clone(), files.key.clone()];
    let mut watch = crate::file_watch::FileWatch::new(paths).await;
    loop {
        watch.changed().await;
        match load(&files).await {
            Ok(key) => {
                resolver.replace(key);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "TLS certificate not reloaded; the previous one stays in force"
            ),
        }
    }
}
