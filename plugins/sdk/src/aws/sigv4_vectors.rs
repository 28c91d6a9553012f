//! Every vector of the official SigV4 test suite (awslabs/aws-c-auth,
//! `tests/aws-signing-test-suite/v4`, copied to `tests/sigv4-vectors` with its provenance), in
//! both modes: signed in the headers and presigned in the query. Each one must give the suite's
//! canonical request, string to sign, signature — and, in header mode, its `Authorization`.

use super::sigv4::{presign, sign, Credentials, Request, Scope};
use std::path::{Path, PathBuf};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-vectors")
}

/// `request.txt`: the request line, headers (a line starting with a space continues the
/// previous header), a blank line, the body.
fn parse_request(text: &str) -> (String, String, String, Vec<(String, String)>, Vec<u8>) {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.as_bytes().to_vec()),
        None => (text.trim_end_matches('\n'), Vec::new()),
    };
    let mut lines = head.lines();
    let first = lines.next().expect("a request line");
    let (method, rest) = first.split_once(' ').expect("METHOD TARGET HTTP/1.1");
    let target = rest.rsplit_once(' ').map_or(rest, |(t, _)| t);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a continuation follows a header");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (k, v) = line.split_once(':').expect("Name:value");
            headers.push((k.to_string(), v.trim().to_string()));
        }
    }
    (method.into(), path.into(), query.into(), headers, body)
}

fn read(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
    text.trim_end_matches('\n').to_string()
}

#[test]
fn every_vector_of_the_suite_signs_as_it_says_in_headers_and_in_the_query() {
    let mut checked = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder())
        .expect("tests/sigv4-vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let context: serde_json::Value = serde_json::from_str(&read(&dir, "context.json")).unwrap();
        let c = &context["credentials"];
        let credentials = Credentials {
            access_key_id: c["access_key_id"].as_str().unwrap().into(),
            secret_access_key: c["secret_access_key"].as_str().unwrap().into(),
            session_token: c["token"].as_str().map(String::from),
        };
        // `2015-08-30T12:36:00Z` → `20150830T123600Z`.
        let amz_date: String =
            context["timestamp"].as_str().unwrap().chars().filter(|c| *c != '-' && *c != ':').collect();
        let scope = Scope {
            region: context["region"].as_str().unwrap(),
            service: context["service"].as_str().unwrap(),
            amz_date: &amz_date,
            normalize: context["normalize"].as_bool().unwrap_or(true),
            sign_body: context["sign_body"].as_bool().unwrap_or(false),
            omit_session_token: context["omit_session_token"].as_bool().unwrap_or(false),
        };
        let (method, path, query, headers, body) = parse_request(&read(&dir, "request.txt"));
        let request = Request { method: &method, path: &path, query: &query, headers: &headers, body: &body };

        let signed = sign(&request, &credentials, &scope);
        assert_eq!(
            signed.canonical_request,
            read(&dir, "header-canonical-request.txt"),
            "{name}: canonical request"
        );
        assert_eq!(signed.string_to_sign, read(&dir, "header-string-to-sign.txt"), "{name}: string to sign");
        assert_eq!(signed.signature, read(&dir, "header-signature.txt"), "{name}: signature");
        let expected = read(&dir, "header-signed-request.txt");
        let authorization =
            expected.lines().find_map(|l| l.strip_prefix("Authorization:")).expect("Authorization line");
        let ours = signed.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
        assert_eq!(ours, Some(authorization), "{name}: Authorization");
        for (k, v) in &signed.headers {
            let line = format!("{}:{v}", k.to_ascii_lowercase());
            assert!(
                expected.lines().any(|l| l.eq_ignore_ascii_case(&line)),
                "{name}: header {line} not in the signed request"
            );
        }

        let presigned =
            presign(&request, &credentials, &scope, context["expiration_in_seconds"].as_u64().unwrap());
        assert_eq!(
            presigned.canonical_request,
            read(&dir, "query-canonical-request.txt"),
            "{name}: query canonical request"
        );
        assert_eq!(
            presigned.string_to_sign,
            read(&dir, "query-string-to-sign.txt"),
            "{name}: query string to sign"
        );
        assert_eq!(presigned.signature, read(&dir, "query-signature.txt"), "{name}: query signature");
        checked.push(name);
    }
    // The suite as copied: 38 vectors, each in both modes.
    assert_eq!(checked.len(), 38, "{checked:?}");
}
