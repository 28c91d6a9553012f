//! The operator's page: `GET /` and its assets under `/ui/`, all embedded in the binary (no
//! network needed, no build step). The page reads the JSON API and acts through the same POST
//! routes as the CLI, with the token.
//!
//! Also owns the headers every response carries: a strict Content-Security-Policy (the page may
//! load and reach nothing but this agent), `nosniff`, no framing, no referrer — and, on a
//! loopback address, the refusal of requests for other host names (DNS rebinding: a web page
//! elsewhere that points its own name at 127.0.0.1 must not read this API).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The page may load scripts, styles and images from this agent only, and talk to it only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// A file under `page/`, served at `path`.
macro_rules! asset {
    ($path:literal, $type:expr, $file:literal) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("page/", $file)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// uPlot 1.6.32 (MIT, Leon Sorokin; licence at `/ui/uPlot.LICENSE`): vendored, not fetched.
const ASSETS: &[Asset] = &[
    asset!("/", "text/html; charset=utf-8", "index.html"),
    asset!("/ui/app.js", JS, "app.js"),
    asset!("/ui/app.css", CSS, "app.css"),
    asset!("/ui/uPlot.iife.min.js", JS, "uPlot.iife.min.js"),
    asset!("/ui/uPlot.min.css", CSS, "uPlot.min.css"),
    asset!("/ui/uPlot.LICENSE", "text/plain; charset=utf-8", "uPlot.LICENSE"),
    asset!("/favicon.ico", "image/svg+xml", "favicon.svg"),
];

/// The paths of the page's files, for the router.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// Serves the embedded file at the request's path.
pub async fn asset(uri: axum::http::Uri) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Revalidated on every load: a new agent version serves new files at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

/// Total size of the page's files, as served (for `/status` and the docs' weight figure).
pub fn weight() -> usize {
    ASSETS.iter().filter(|a| !a.path.ends_with("LICENSE")).map(|a| a.body.len()).sum()
}

/// Whether `host` (a Host header's value) names this machine's loopback.
fn loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "::1")
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// The headers of every response, and the Host check on a loopback listener.
pub async fn guard(loopback: bool, req: Request, next: Next) -> Response {
    if loopback {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !host.is_empty() && !loopback_name(host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!("this agent listens on loopback and answers only to loopback names, not `{host}`\n"),
            )
                .into_response();
        }
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_and_without_ports() {
        for ok in ["127.0.0.1:9820", "localhost", "LOCALHOST:80", "[::1]:9820", "127.1.2.3:5"] {
            assert!(loopback_name(ok), "{ok}");
        }
        for bad in ["evil.example:9820", "10.0.0.1:9820", "[fe80::1]:9820", "localhost.evil.example"] {
            assert!(!loopback_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_page_stays_light() {
        // The budget: 300 KiB for everything the page loads.
        assert!(weight() < 300 * 1024, "{} bytes", weight());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }
}
