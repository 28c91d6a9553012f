//! A private CA of the test's own (made with the `openssl` command, as an operator would) and a
//! TLS-terminating proxy of ours on loopback that presents its certificate in front of a plain
//! HTTP service: Keystone behind a private CA, without reconfiguring the real Keystone.

use crate::pki::Pki;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A CA and a server certificate it signed for `IP:127.0.0.1` and `DNS:localhost`.
pub struct PrivateCa {
    pki: Pki,
}

impl PrivateCa {
    pub fn make() -> PrivateCa {
        let pki = Pki::new();
        pki.ca("ca", "elastic test private CA");
        pki.signed(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
        );
        PrivateCa { pki }
    }

    /// The CA's certificate: what `ca_file` names.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.path("ca.pem")
    }

    fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let path = |f: &str| self.pki.path(f);
        let certs = CertificateDer::pem_file_iter(path("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(path("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    }
}

/// Terminates TLS with the private CA's server certificate and passes each connection on to
/// `upstream` unchanged. Counts the handshakes that succeeded, and keeps why the others failed
/// (a client that does not trust the certificate aborts the handshake with an alert).
pub struct TlsProxy {
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl TlsProxy {
    pub fn start(upstream: SocketAddr, ca: &PrivateCa) -> TlsProxy {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (handshakes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (h, r) = (handshakes.clone(), refused.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let (acceptor, h, r) = (acceptor.clone(), h.clone(), r.clone());
                    tokio::spawn(async move {
                        let mut tls = match acceptor.accept(client).await {
                            Ok(tls) => tls,
                            Err(e) => return r.lock().unwrap().push(e.to_string()),
                        };
                        h.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                        }
                    });
                }
            });
        });
        TlsProxy { addr, handshakes, refused }
    }

    /// Connections whose TLS handshake succeeded.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Why each failed handshake failed, as the server saw it.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

/// `scheme://host:port` of a URL.
pub fn origin(url: &str) -> String {
    url.split('/').take(3).collect::<Vec<_>>().join("/")
}
