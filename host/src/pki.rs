//! TLS files as the agent reads them: CA bundles (a plugin's `ca_file`, `[cluster] ca_file`)
//! and client certificates, and the clients built from them. Below `config`, which checks the
//! files when it reads them, and the plugin runtime and the cluster, which use them.

use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Largest CA bundle read: a bundle of every public root is ~220 KiB.
const MAX_CA_FILE: u64 = 1 << 20;

/// A plugin's `ca_file`: the certificates read from it and the client configuration that trusts
/// them on top of the built-in roots. Two bundles are equal when they name the same file with the
/// same certificates, so a reload that changes the file's content renews the plugin's grants.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    certificates: Vec<CertificateDer<'static>>,
    client: Arc<ClientConfig>,
}

impl CaBundle {
    /// Reads the PEM bundle at `path` and builds the client configuration that trusts it. The
    /// error says what is wrong with the file (the caller names the field and the path).
    pub fn read(path: &Path) -> Result<CaBundle, String> {
        let pem = read_bounded(path)?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a valid PEM file: {e}"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA that signed the server's certificate".into());
        }
        let mut roots = web_roots();
        for (i, certificate) in certificates.iter().enumerate() {
            roots.add(certificate.clone()).map_err(|e| {
                format!("certificate {} of {} is not a usable CA certificate: {e}", i + 1, certificates.len())
            })?;
        }
        Ok(CaBundle { path: path.to_path_buf(), certificates, client: client_config(roots) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates the bundle holds.
    pub fn certificate_count(&self) -> usize {
        self.certificates.len()
    }

    /// The client configuration: the built-in roots and this bundle's.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &CaBundle) -> bool {
        self.path == other.path && self.certificates == other.certificates
    }
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} certificates)", self.path.display(), self.certificates.len())
    }
}

/// The file's bytes, refusing what cannot be a CA bundle (a FIFO, a device, a huge file)
/// without blocking on it.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |e: std::io::Error| format!("cannot be read: {e}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err("not a regular file".into());
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE + 1).read_to_end(&mut pem).map_err(unreadable)?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(format!("larger than {} KiB: not a CA bundle", MAX_CA_FILE >> 10));
    }
    Ok(pem)
}

fn web_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() }
}

/// A client configuration trusting `roots`, on the ring provider the rest of the agent uses.
fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The configuration of a plugin without `ca_file`: the built-in roots only, built once.
pub fn web_pki() -> Arc<ClientConfig> {
    static WEB_PKI: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    WEB_PKI.get_or_init(|| client_config(web_roots())).clone()
}

/// An HTTP client (etcd's members use it): `ca` (PEM) as the only trust anchors when given, else the
/// built-in web roots; `identity` (PEM: certificate chain and key) as the client certificate.
/// Also what `[cluster]`'s validation builds to check the files.
pub fn https_client(
    timeout: Duration,
    ca: Option<&[u8]>,
    identity: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().no_proxy().timeout(timeout).connect_timeout(timeout);
    if let Some(pem) = ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| crate::text::chain(&e))?;
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(pem).map_err(|e| crate::text::chain(&e))?);
    }
    if ca.is_some() || identity.is_some() {
        builder = builder.https_only(true);
    }
    builder.build().map_err(|e| crate::text::chain(&e))
}
