//! How a plugin's outbound request reaches its origin: TCP, TLS with the roots *that plugin*
//! trusts (the built-in web PKI, plus its `[plugins.NAME] ca_file`), and HTTP/1.1.
//!
//! `wasmtime_wasi_http::default_send_request` trusts the built-in roots only, so a Keystone
//! behind a private CA would push an operator to plain `http://`. [`Client::send`] is that one with
//! the plugin's own [`ClientConfig`] (built once per plugin settings, when the configuration is
//! read, never per request), its TLS handshake under the connect timeout too, and TLS failures
//! mapped to the `wasi:http` error codes a client tells apart. The budgets stay in the caller
//! ([`super::outbound`]): this module only carries a request there and back.

use bytes::Bytes;
use http::uri::Scheme;
use http_body::Body;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions};

use crate::pki::web_pki;
pub use crate::pki::CaBundle;

/// The longest each stage may take when the caller sets no limit (as `default_send_request`).
const NO_LIMIT: Duration = Duration::from_secs(600);

/// What one plugin's requests go out with: its client configuration, and where a failed
/// handshake is told to the operator (the guest gets only an error code, the operator the reason
/// and what to do: one line per origin and episode, as the budgets log).
pub struct Client {
    plugin: Arc<str>,
    config: Arc<ClientConfig>,
    ca_file: Option<PathBuf>,
    /// Per origin (`host:port`): when its last failure happened. Bounded by the origins granted.
    failures: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Client {
    /// The client of `plugin`: the built-in roots, and `ca`'s when given.
    pub fn new(plugin: Arc<str>, ca: Option<&CaBundle>) -> Client {
        let config = ca.map_or_else(web_pki, CaBundle::client);
        let ca_file = ca.map(|c| c.path().to_path_buf());
        Client { plugin, config, ca_file, failures: Default::default() }
    }

    /// The same plugin under new settings: its episodes carry on.
    pub fn renewed(&self, ca: Option<&CaBundle>) -> Client {
        Client { failures: self.failures.clone(), ..Client::new(self.plugin.clone(), ca) }
    }

    /// Sends `request` to the origin in its URI (TLS for https) and returns the response as soon
    /// as its head has arrived, with the future that drives the connection to its end.
    /// `connect_timeout` bounds the TCP connect and the TLS handshake each; `first_byte_timeout`
    /// the wait for the response head; `between_bytes_timeout` each wait for a piece of the body.
    pub async fn send(
        &self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: RequestOptions,
    ) -> Result<
        (
            http::Response<impl Body<Data = Bytes, Error = Error>>,
            impl Future<Output = Result<(), Error>> + Send,
        ),
        Error,
    > {
        let connect_timeout = options.connect_timeout.unwrap_or(NO_LIMIT);
        let first_byte_timeout = options.first_byte_timeout.unwrap_or(NO_LIMIT);
        let between_bytes = options.between_bytes_timeout.unwrap_or(NO_LIMIT).max(Duration::from_nanos(1));
        let use_tls = request.uri().scheme() == Some(&Scheme::HTTPS);
        let authority = authority_with_port(request.uri(), use_tls)?;
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&authority)).await {
            Ok(stream) => stream.map_err(Error::Connect)?,
            Err(_) => return Err(Error::ConnectionTimeout),
        };
        let io: Box<dyn Stream> = if use_tls {
            let name = server_name(&authority)?;
            let handshake = tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, stream);
            // A server that accepts the connection and never answers must not hold the request
            // until the response budget runs out.
            match tokio::time::timeout(connect_timeout, handshake).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => return Err(self.failed(&authority, &e)),
                Err(_) => return Err(Error::ConnectionTimeout),
            }
        } else {
            Box::new(stream)
        };
        let handshake =
            hyper::client::conn::http1::Builder::new().handshake(wasmtime_wasi_http::io::TokioIo::new(io));
        let (mut sender, conn) = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        // The URI holds the scheme and the authority; on the wire they belong only in a request
        // to a proxy, and hyper does not remove them.
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
        let head = async move {
            let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)??;
            let mut timeout = tokio::time::interval(between_bytes);
            timeout.reset();
            Ok::<_, Error>(response.map(|incoming| Timed { incoming, timeout }))
        };
        let (response, conn) = drive(head, conn).await?;
        Ok((response, finish(conn)))
    }

    /// A failed handshake with `authority`: the error code for the guest; the reason, and what
    /// to do about it, in the log when this starts an episode for that origin.
    fn failed(&self, authority: &str, e: &std::io::Error) -> Error {
        let code = tls_error(e);
        if !self.starts_episode(authority) {
            return code;
        }
        let reason = rustls_error(e).map_or_else(|| e.to_string(), |inner| inner.to_string());
        let hint = match (&code, &self.ca_file) {
            (Error::TlsCertificateError, None) => format!(
                "; if a private CA signed the server's certificate, give its PEM file as [plugins.{}] ca_file",
                self.plugin
            ),
            (Error::TlsCertificateError, Some(ca)) => {
                format!("; neither the built-in roots nor ca_file {} trust the server's certificate", ca.display())
            }
            _ => String::new(),
        };
        tracing::warn!(
            plugin = %self.plugin,
            "TLS with https://{authority} failed: {reason}{hint}; the plugin sees {code}, further failures with it are logged again after a quiet minute"
        );
        code
    }

    /// Whether a failure with `authority` now is the first after a quiet spell.
    fn starts_episode(&self, authority: &str) -> bool {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let last = failures.insert(authority.to_string(), now);
        last.is_none_or(|last| now.duration_since(last) >= super::meter::EPISODE_GAP)
    }
}

/// What the TLS and plain streams have in common for hyper.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Connection = hyper::client::conn::http1::Connection<
    wasmtime_wasi_http::io::TokioIo<Box<dyn Stream>>,
    wasmtime_wasi_http::WasiBody,
>;

/// Waits for `head` while driving the connection's I/O, which it needs to make progress. Returns
/// the connection unless it has already ended.
async fn drive<T>(
    head: impl Future<Output = Result<T, Error>>,
    conn: Connection,
) -> Result<(T, Option<Connection>), Error> {
    let mut head = pin!(head);
    let mut conn = Some(conn);
    let response = poll_fn(|cx| {
        if let Poll::Ready(r) = head.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let Some(c) = conn.as_mut() else { return Poll::Pending };
        let ended = ready!(Pin::new(c).poll(cx));
        conn = None;
        match ended {
            // The connection is done: the answer is there, or it never will be.
            Ok(()) => head.as_mut().poll(cx),
            Err(e) => Poll::Ready(Err(Error::from(e))),
        }
    })
    .await?;
    Ok((response, conn))
}

/// The rest of the connection's life (the body's I/O).
async fn finish(conn: Option<Connection>) -> Result<(), Error> {
    let Some(conn) = conn else { return Ok(()) };
    conn.await.map_err(|e| if e.is_timeout() { Error::HttpResponseTimeout } else { Error::from(e) })
}

/// `host:port` of the request's URI, the port defaulted by the scheme.
fn authority_with_port(uri: &http::Uri, use_tls: bool) -> Result<String, Error> {
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    Ok(match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:{}", if use_tls { 443 } else { 80 }),
    })
}

/// The name the server's certificate must carry: the IP address of an IP literal (`[::1]:443`
/// included), else the host name without its port.
fn server_name(authority: &str) -> Result<ServerName<'static>, Error> {
    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        return Ok(ServerName::from(addr.ip()));
    }
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    Ok(ServerName::try_from(host)?.to_owned())
}

/// A failed TLS handshake as the `wasi:http` error a client tells apart: the server's
/// certificate not trusted (set `ca_file`), an alert from the server, the connection cut, or
/// anything else in the protocol.
fn tls_error(e: &std::io::Error) -> Error {
    use std::io::ErrorKind;
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Error::TlsCertificateError
        }
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        Some(_) => Error::TlsProtocolError,
        None => match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                Error::ConnectionTerminated
            }
            _ => Error::TlsProtocolError,
        },
    }
}

/// The TLS error inside what tokio-rustls returns, if the handshake failed in TLS itself.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// A response body whose every wait for the next piece is bounded.
struct Timed {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl Body for Timed {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

/// Certificates made with `openssl` for the tests (P-256, valid until 2126): a private CA, a
/// server certificate it signed for 127.0.0.1 and localhost and its key, and an unrelated CA.
#[cfg(test)]
pub(crate) mod test_pki {
    pub const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUegAwIBAgIUUIa/1TLlvyXu+mepqra9nF3Y8SwwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSYWdlbnQgdW5pdC10ZXN0IENBMCAXDTI2MTIwMzIxMzQxMVoY
DzIxMjYxMTA5MjEzNDExWjAdMRswGQYDVQQDDBJhZ2VudCB1bml0LXRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQAk/9/pMMgITvrxky+8PkRRg4rStjF
5H4TkAIWjJkok4ELDmCgArKvetswi42njtKcYFKzs6W6Gup8Izu37Yqko2MwYTAd
BgNVHQ4EFgQUJ6l+ipbn/7M+KIpCsxfcs5gID2swHwYDVR0jBBgwFoAUJ6l+ipbn
/7M+KIpCsxfcs5gID2swDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYw
CgYIKoZIzj0EAwIDRwAwRAIgSUIDHwC9/Zd9jpbP5jBhsQtu4Gm+qk0G5qXMEhi0
K5wCIB3WinoA+CSwYcLMAOtxkmti0JZ8MI8Q4YYLHqJ7EHDJ
-----END CERTIFICATE-----\n";
    pub const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIUVEBcD9kvtlYJBFXDaHDud4lV/UMwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYYWdlbnQgdW5pdC10ZXN0IG90aGVyIENBMCAXDTI2MTIwMzIx
MzQxMVoYDzIxMjYxMTA5MjEzNDExWjAjMSEwHwYDVQQDDBhhZ2VudCB1bml0LXRl
c3Qgb3RoZXIgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASl+EemUPlhOn5R
cNbRm1BwTlYLUQw/nzAW2ytBIo9wXh13zzZV4tz/FfuQV/wWHJWzX2sMNFEbisz8
raadjd0Vo2MwYTAdBgNVHQ4EFgQUzNFv/GAh5VSse9B0D+sa5odjseYwHwYDVR0j
BBgwFoAUzNFv/GAh5VSse9B0D+sa5odjseYwDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAQYwCgYIKoZIzj0EAwIDSAAwRQIgZqBfXnaJElWPjARmvTr2U+mp
hTLb7Qa5h9UeLudway0CIQDsgYcHCXyRngxws8Qi4B1VQqg145LiGAGPGxzyOsqC
1g==
-----END CERTIFICATE-----\n";
    pub const SERVER: &str = "-----BEGIN CERTIFICATE-----
MIIBxzCCAW6gAwIBAgIUBgl6y8de5WTJbxgh5mBab13cqfIwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSYWdlbnQgdW5pdC10ZXN0IENBMCAXDTI2MTIwMzIxMzQxMVoY
DzIxMjYxMTA5MjEzNDExWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAAS6V0D0+JkR9YZSsJks3HobNuJFBtVGCaD0n5mUXr5S
0Qn2GaTNcQeSkmWJQkdVmOin+nh4yZZgg8VnlplKLrYlo4GSMIGPMBoGA1UdEQQT
MBGHBH8AAAGCCWxvY2FsaG9zdDAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIH
gDATBgNVHSUEDDAKBggrBgEFBQcDATAdBgNVHQ4EFgQUmRyzwkHwetLgzsUXn0JA
RnGoy7YwHwYDVR0jBBgwFoAUJ6l+ipbn/7M+KIpCsxfcs5gID2swCgYIKoZIzj0E
AwIDRwAwRAIgHbYLHHuwSaao9hgHFp1jA1swpLTmBOVz93DpBEkT5FcCIFrpeJxI
eKbVVrnU7KxUM854GxexnhFpCOWuQ21I++Tf
-----END CERTIFICATE-----\n";
    pub const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgM7fUyZKgJrwTM0Of
vMGxHrJdwKvNtTadGqOu/RBSSWWhRANCAAS6V0D0+JkR9YZSsJks3HobNuJFBtVG
CaD0n5mUXr5S0Qn2GaTNcQeSkmWJQkdVmOin+nh4yZZgg8VnlplKLrYl
-----END PRIVATE KEY-----\n";
}

#[cfg(test)]
mod tests {
    use super::test_pki::{CA, OTHER_CA, SERVER, SERVER_KEY};
    use super::*;
    use http_body_util::BodyExt;
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn bundle(pem: &str) -> Result<CaBundle, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        CaBundle::read(&path)
    }

    #[test]
    fn a_ca_file_is_read_or_refused_with_what_is_wrong_with_it() {
        let ca = bundle(CA).unwrap();
        assert_eq!(ca.certificate_count(), 1);
        // A bundle of two, and text around the certificates (as `openssl x509 -text` leaves it).
        assert_eq!(bundle(&format!("CA one\n{CA}\nCA two\n{OTHER_CA}")).unwrap().certificate_count(), 2);
        // Read again (a reload): equal while the file says the same, not once it changes, so
        // the plugin's grants are renewed with the new roots.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, CA).unwrap();
        let before = CaBundle::read(&path).unwrap();
        assert_eq!(before, CaBundle::read(&path).unwrap());
        std::fs::write(&path, OTHER_CA).unwrap();
        assert_ne!(before, CaBundle::read(&path).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let e = CaBundle::read(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.starts_with("cannot be read: No such file"), "{e}");
        assert_eq!(CaBundle::read(dir.path()).unwrap_err(), "not a regular file");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(CaBundle::read(&fifo).unwrap_err(), "not a regular file", "read without blocking");

        let e = bundle(SERVER_KEY).unwrap_err();
        assert!(e.starts_with("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"), "{e}");
        assert!(bundle("").unwrap_err().starts_with("holds no PEM certificate"));
        let cut = &CA[..CA.len() - 30];
        assert!(bundle(cut).unwrap_err().starts_with("not a valid PEM file: "), "{cut}");
        let e = bundle("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.starts_with("certificate 1 of 1 is not a usable CA certificate: "), "{e}");
        let e = bundle(&"x".repeat(2 << 20)).unwrap_err();
        assert_eq!(e, "larger than 1024 KiB: not a CA bundle");
    }

    /// An HTTPS server on loopback with the private CA's certificate: answers each request with
    /// `200 ok` and passes on what it received.
    async fn https_server() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let certs = CertificateDer::pem_slice_iter(SERVER.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = vec![0; 4096];
                    let n = tls.read(&mut head).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&head[..n]).into_owned());
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = tls.write_all(answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, rx)
    }

    fn get(url: &str) -> http::Request<wasmtime_wasi_http::WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::get(url).body(body).unwrap()
    }

    fn within(secs: u64) -> RequestOptions {
        let t = Some(Duration::from_secs(secs));
        RequestOptions { connect_timeout: t, first_byte_timeout: t, between_bytes_timeout: t }
    }

    async fn fetch(client: &Client, url: &str) -> Result<(u16, String), Error> {
        let (response, io) = client.send(get(url), within(5)).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        io.await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test]
    async fn a_private_ca_server_is_reached_only_when_its_ca_is_trusted() {
        let (addr, mut seen) = https_server().await;
        let url = format!("https://{addr}/v3/auth/tokens?nocatalog");
        let trusting = Client::new("p".into(), Some(&bundle(CA).unwrap()));
        assert_eq!(fetch(&trusting, &url).await.unwrap(), (200, "ok".to_string()));
        // The request line carries the path only, as to an origin server (not to a proxy).
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with("GET /v3/auth/tokens?nocatalog HTTP/1.1\r\n"), "{head}");
        // By name too: the certificate is for localhost as well.
        let by_name = format!("https://localhost:{}/", addr.port());
        assert_eq!(fetch(&trusting, &by_name).await.unwrap().0, 200);

        // The built-in roots alone, or another private CA: the certificate is refused.
        for client in
            [Client::new("p".into(), None), Client::new("p".into(), Some(&bundle(OTHER_CA).unwrap()))]
        {
            let e = fetch(&client, &url).await.unwrap_err();
            assert!(matches!(e, Error::TlsCertificateError), "{e:?}");
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_the_handshake_times_out_at_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                open.push(tcp);
            }
        });
        let client = Client::new("p".into(), Some(&bundle(CA).unwrap()));
        // Every other budget is an hour: within this test's patience (a minute, however loaded
        // the machine), only the connect timeout can end the handshake.
        let options = RequestOptions { connect_timeout: Some(Duration::from_millis(300)), ..within(3600) };
        let started = Instant::now();
        let request = client.send(get(&format!("https://{addr}/")), options);
        let sent = tokio::time::timeout(Duration::from_secs(60), request).await;
        let e = sent.expect("the handshake outlived its connect timeout").map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::ConnectionTimeout), "{e:?}");
        // Not before it either (a timer never fires early).
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn plain_http_goes_out_without_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = vec![0; 4096];
            let _ = tcp.read(&mut head).await;
            let _ = tcp.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
        });
        let client = Client::new("p".into(), None);
        assert_eq!(fetch(&client, &format!("http://{addr}/")).await.unwrap(), (204, String::new()));
    }

    #[test]
    fn server_names_are_ip_literals_or_host_names_without_the_port() {
        let ip = |s: &str| ServerName::from(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(server_name("127.0.0.1:443").unwrap(), ip("127.0.0.1"));
        assert_eq!(server_name("[::1]:443").unwrap(), ip("::1"));
        assert_eq!(
            server_name("keystone.example:5000").unwrap(),
            ServerName::try_from("keystone.example").unwrap()
        );
        assert!(server_name("bad name:443").is_err());
    }
}
