//! AWS Signature Version 4: the canonical request, the string to sign, the signing key and the
//! signature, for a request signed in its headers (`Authorization`) or in its query (a presigned
//! URL). Pure: no clock, no network — checked against every vector of the official test suite
//! (`tests/sigv4-vectors`, from awslabs/aws-c-auth) in `sigv4_vectors.rs`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The one algorithm this signer speaks.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Who signs: an access key, its secret, and for temporary credentials the session token.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secret or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, secret ***)", self.access_key_id)
    }
}

/// The request to sign, as it will be sent.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, without the query (`/`, `/example space/`).
    pub path: &'a str,
    /// The query as sent, without `?` (empty when none).
    pub query: &'a str,
    /// Every header to sign, `host` included (it is the URL's authority).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Where and when it is signed, and how.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    /// `20150830T123600Z` (see `time::amz_date`).
    pub amz_date: &'a str,
    /// Remove `.`/`..` segments and repeated slashes from the path first. Every service but S3.
    pub normalize: bool,
    /// Send the body's hash as `x-amz-content-sha256` (S3 needs it; header signing only).
    pub sign_body: bool,
    /// Sign without the session token, and add it afterwards (a few services want that).
    pub omit_session_token: bool,
}

/// A request signed in its headers.
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    /// The headers to add to the request: `x-amz-date`, maybe `x-amz-content-sha256` and
    /// `x-amz-security-token`, and `authorization`.
    pub headers: Vec<(String, String)>,
}

/// A request signed in its query.
pub struct Presigned {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    /// The whole query to send, the signature last.
    pub query: String,
}

/// Headers a signer never signs: proxies and clients change them.
const UNSIGNED: [&str; 6] =
    ["authorization", "user-agent", "x-amzn-trace-id", "expect", "connection", "transfer-encoding"];

/// Signs `request` in its headers.
pub fn sign(request: &Request, credentials: &Credentials, scope: &Scope) -> Signed {
    let payload = hex(&Sha256::digest(request.body));
    let mut headers: Vec<(String, String)> = request.headers.to_vec();
    let mut added = vec![("x-amz-date".to_string(), scope.amz_date.to_string())];
    if scope.sign_body {
        added.push(("x-amz-content-sha256".into(), payload.clone()));
    }
    let token = credentials.session_token.as_ref().map(|t| ("x-amz-security-token".to_string(), t.clone()));
    if let (Some(t), false) = (&token, scope.omit_session_token) {
        added.push(t.clone());
    }
    headers.extend(added.iter().cloned());
    let (canonical_headers, signed_headers) = canonical_headers(&headers);
    let canonical_request = [
        request.method,
        &canonical_path(request.path, scope.normalize),
        &canonical_query(&parse_query(request.query)),
        &canonical_headers,
        &signed_headers,
        &payload,
    ]
    .join("\n");
    let (string_to_sign, signature) = signature(&canonical_request, credentials, scope);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id,
        credential_scope(scope)
    );
    if let (Some(t), true) = (token, scope.omit_session_token) {
        added.push(t);
    }
    added.push(("authorization".into(), authorization));
    Signed { canonical_request, string_to_sign, signature, headers: added }
}

/// Signs `request` in its query, valid for `expires_s` seconds from the scope's date.
pub fn presign(request: &Request, credentials: &Credentials, scope: &Scope, expires_s: u64) -> Presigned {
    let (canonical_headers, signed_headers) = canonical_headers(request.headers);
    let mut params = parse_query(request.query);
    let credential = format!("{}/{}", credentials.access_key_id, credential_scope(scope));
    params.push(("X-Amz-Algorithm".into(), ALGORITHM.into()));
    params.push(("X-Amz-Credential".into(), credential));
    params.push(("X-Amz-Date".into(), scope.amz_date.into()));
    params.push(("X-Amz-Expires".into(), expires_s.to_string()));
    params.push(("X-Amz-SignedHeaders".into(), signed_headers.clone()));
    if let (Some(t), false) = (&credentials.session_token, scope.omit_session_token) {
        params.push(("X-Amz-Security-Token".into(), t.clone()));
    }
    let query = canonical_query(&params);
    let payload = hex(&Sha256::digest(request.body));
    let canonical_request = [
        request.method,
        &canonical_path(request.path, scope.normalize),
        &query,
        &canonical_headers,
        &signed_headers,
        &payload,
    ]
    .join("\n");
    let (string_to_sign, signature) = signature(&canonical_request, credentials, scope);
    let query = format!("{query}&X-Amz-Signature={signature}");
    Presigned { canonical_request, string_to_sign, signature, query }
}

/// `20150830/us-east-1/service/aws4_request`.
fn credential_scope(scope: &Scope) -> String {
    let date = scope.amz_date.get(..8).unwrap_or(scope.amz_date);
    format!("{date}/{}/{}/aws4_request", scope.region, scope.service)
}

/// The string to sign and its signature.
fn signature(canonical_request: &str, credentials: &Credentials, scope: &Scope) -> (String, String) {
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date,
        credential_scope(scope),
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let date = scope.amz_date.get(..8).unwrap_or(scope.amz_date);
    let mut key = hmac(format!("AWS4{}", credentials.secret_access_key).as_bytes(), date.as_bytes());
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    (string_to_sign, signature)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `name:value` lines (names lower case and sorted, values trimmed with runs of spaces made one,
/// repeated names' values joined by `,` in order), and the signed header list `a;b;c`.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        if UNSIGNED.contains(&name.as_str()) {
            continue;
        }
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let lines: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let names: Vec<&str> = merged.iter().map(|(n, _)| n.as_str()).collect();
    (lines, names.join(";"))
}

/// The path, normalized when asked, every byte but the unreserved ones and `/` percent-encoded.
fn canonical_path(path: &str, normalize: bool) -> String {
    let path = if normalize { normalize_path(path) } else { path.to_string() };
    let path = if path.is_empty() { "/".to_string() } else { path };
    encode(&path, false)
}

/// Removes `.` and `..` segments and empty ones (`//`), keeping a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let trailing = path.ends_with('/') && !kept.is_empty();
    format!("/{}{}", kept.join("/"), if trailing { "/" } else { "" })
}

/// A query's `key=value` pairs, percent-decoded (a key without `=` has an empty value).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Pairs encoded, sorted by key then value, joined with `&`.
fn canonical_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k, true), encode(v, true))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Percent-encodes every byte but `A-Z a-z 0-9 - _ . ~` (and `/` unless `slash`), upper-case hex:
/// the encoding SigV4 and AWS's query protocol both use.
pub fn encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` sequences; anything else (a stray `%` included) is kept as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_the_suite_says() {
        for (raw, normal) in [
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./", "/"),
            ("//", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/b/../c/", "/a/c/"),
        ] {
            assert_eq!(normalize_path(raw), normal, "{raw}");
        }
        assert_eq!(canonical_path("/example space/ሴ", true), "/example%20space/%E1%88%B4");
    }

    #[test]
    fn a_stray_percent_survives_decoding_and_is_encoded() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(canonical_query(&parse_query("a=100%&b=%41")), "a=100%25&b=A");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("t0k3n".into()),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("t0k3n"), "{shown}");
    }
}
