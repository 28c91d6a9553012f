//! Signed plugins. A signature travels inside the component, as a custom section named
//! `elastic-signature` appended at its end (a component with extra custom sections is the same
//! program, so a signed file runs anywhere an unsigned one does). It is an Ed25519 signature of
//! every byte before the first such section — the file exactly as it was built, so
//! `openssl pkeyutl -sign -rawin` over the unsigned file makes the same signature as
//! `agent plugins sign`. Several signatures may follow one another; each covers the same bytes.
//!
//! The section's payload is JSON: `{"v":1,"alg":"ed25519","key":"KEYID","sig":"BASE64"}`, where
//! `KEYID` is [`crate::keys::key_id`] of the public key.

use crate::config::{Binding, TrustSpec};
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// The custom section's name.
pub const SECTION: &str = "elastic-signature";

/// One signature found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub key: String,
    pub sig: Vec<u8>,
}

/// A file split into what was signed and the signatures appended to it. A file whose section
/// structure cannot be walked has no signatures (the loader says what is wrong with it).
pub fn split(bytes: &[u8]) -> Result<(&[u8], Vec<Signature>), String> {
    let sections = match sections(bytes) {
        Some(s) => s,
        None => return Ok((bytes, Vec::new())),
    };
    let trailing: Vec<&Section> =
        sections.iter().rev().take_while(|s| s.name.as_deref() == Some(SECTION)).collect();
    let Some(first) = trailing.last() else { return Ok((bytes, Vec::new())) };
    let mut signatures = Vec::new();
    for section in trailing.iter().rev() {
        signatures.push(parse_payload(&bytes[section.payload.clone()])?);
    }
    Ok((&bytes[..first.start], signatures))
}

/// Who signed `bytes`, as far as `trust` knows: the ids of trusted keys whose signature
/// verifies, and the ids of the keys it does not know. A signature by a trusted key that does
/// not verify means the file changed after it was signed: an error.
pub fn verify(bytes: &[u8], trust: &TrustSpec) -> Result<Verdict, String> {
    let (signed, signatures) = split(bytes)?;
    let mut verdict = Verdict::default();
    for s in signatures {
        match trust.key(&s.key) {
            None => verdict.unknown.push(s.key),
            Some(key) => {
                UnparsedPublicKey::new(&ED25519, key.public).verify(signed, &s.sig).map_err(|_| {
                    format!(
                        "has a signature by key {} that does not verify: the file was changed after it was signed",
                        s.key
                    )
                })?;
                verdict.trusted.push(s.key);
            }
        }
    }
    Ok(verdict)
}

/// What [`verify`] found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Verdict {
    /// Trusted keys whose signature verifies.
    pub trusted: Vec<String>,
    /// Keys not in `[trust]` (not checked: nothing to check them against).
    pub unknown: Vec<String>,
}

/// Whether the file with these `bytes` (content digest `hash`) may run as `binding` (if it is
/// the file of one) under `trust`: checked before anything compiles it. Returns the signer.
pub fn admit(
    bytes: &[u8],
    hash: &str,
    binding: Option<&Binding>,
    trust: &TrustSpec,
) -> Result<Option<String>, String> {
    if let Some((pin, name)) = binding.and_then(|b| Some((b.sha256.as_deref()?, &b.name))) {
        if pin != hash {
            return Err(format!(
                "has SHA-256 {hash}, not the {pin} that [plugins.{name}] sha256 pins; put the pinned file back or change the pin"
            ));
        }
    }
    let verdict = verify(bytes, trust)?;
    let signer = verdict.trusted.first().cloned();
    let unknown = || match verdict.unknown.first() {
        Some(k) => format!("it is signed by {k}, a key not in [trust] trusted_keys"),
        None => "it is not signed (`agent plugins sign FILE --key KEY`)".to_string(),
    };
    if let Some((wanted, name)) = binding.and_then(|b| Some((b.signer.as_deref()?, &b.name))) {
        if !verdict.trusted.iter().any(|k| k == wanted) {
            let by = match &signer {
                Some(other) => format!("it is signed by {other}"),
                None => unknown(),
            };
            return Err(format!(
                "is not signed by key {wanted}, which [plugins.{name}] signer asks for: {by}"
            ));
        }
        return Ok(Some(wanted.to_string()));
    }
    if trust.require_signature && signer.is_none() {
        return Err(format!(
            "is not signed by a trusted key, which [trust] require_signature asks for: {}",
            unknown()
        ));
    }
    Ok(signer)
}

/// A new key: (private seed, public key).
pub fn keygen() -> Result<([u8; 32], [u8; 32]), String> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok((seed, public_key(&seed)?))
}

/// The public key of a private seed.
pub fn public_key(seed: &[u8; 32]) -> Result<[u8; 32], String> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| format!("not an Ed25519 key: {e}"))?;
    <[u8; 32]>::try_from(pair.public_key().as_ref()).map_err(|_| "not an Ed25519 key".to_string())
}

/// `bytes` with one more signature, by the key whose seed is `seed`, over what the file's
/// existing signatures cover (the whole file, if it has none).
pub fn sign(bytes: &[u8], seed: &[u8; 32]) -> Result<Vec<u8>, String> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| format!("not an Ed25519 key: {e}"))?;
    let (signed, _) = split(bytes)?;
    let public = public_key(seed)?;
    let payload = serde_json::json!({
        "v": 1,
        "alg": "ed25519",
        "key": crate::keys::key_id(&public),
        "sig": base64::engine::general_purpose::STANDARD.encode(pair.sign(signed).as_ref()),
    })
    .to_string();
    let mut out = bytes.to_vec();
    out.extend(custom_section(SECTION, payload.as_bytes()));
    Ok(out)
}

/// A custom section (id 0): size, name, payload.
pub fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = vec![0u8];
    out.extend(leb128(content.len() as u64));
    out.extend(content);
    out
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn parse_payload(payload: &[u8]) -> Result<Signature, String> {
    let bad = |why: &str| format!("has a malformed {SECTION} section: {why}");
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad("not JSON"))?;
    if v["v"] != 1 || v["alg"] != "ed25519" {
        return Err(bad("not version 1, ed25519"));
    }
    let key = v["key"].as_str().filter(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()));
    let key = key.ok_or_else(|| bad("no 16-hex-digit key id"))?.to_ascii_lowercase();
    let sig = v["sig"].as_str().ok_or_else(|| bad("no sig"))?;
    let sig = base64::engine::general_purpose::STANDARD.decode(sig).map_err(|_| bad("sig is not base64"))?;
    if sig.len() != 64 {
        return Err(bad("sig is not 64 bytes"));
    }
    Ok(Signature { key, sig })
}

struct Section {
    start: usize,
    name: Option<String>,
    payload: std::ops::Range<usize>,
}

/// The top-level sections of a module or component, or `None` if they cannot be walked.
fn sections(bytes: &[u8]) -> Option<Vec<Section>> {
    let mut at = 8; // magic and version
    if bytes.len() < at || &bytes[..4] != b"\0asm" {
        return None;
    }
    let mut out = Vec::new();
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        let (size, n) = read_leb128(&bytes[at + 1..])?;
        let body = at + 1 + n;
        let end = body.checked_add(usize::try_from(size).ok()?).filter(|&e| e <= bytes.len())?;
        let (name, payload) = if id == 0 {
            let (len, m) = read_leb128(&bytes[body..end])?;
            let name_end = (body + m).checked_add(usize::try_from(len).ok()?).filter(|&e| e <= end)?;
            (std::str::from_utf8(&bytes[body + m..name_end]).ok().map(String::from), name_end..end)
        } else {
            (None, body..end)
        };
        out.push(Section { start, name, payload });
        at = end;
    }
    Some(out)
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedKey;

    /// The smallest component: magic, component-layer version.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn trust(seeds: &[[u8; 32]], require: bool) -> TrustSpec {
        let keys = seeds
            .iter()
            .map(|s| {
                let public = public_key(s).unwrap();
                TrustedKey { id: crate::keys::key_id(&public), public, source: "test".into() }
            })
            .collect();
        TrustSpec { keys, require_signature: require }
    }

    fn binding(sha256: Option<&str>, signer: Option<String>) -> Binding {
        Binding { name: "p".into(), file: "p.wasm".into(), sha256: sha256.map(String::from), signer }
    }

    #[test]
    fn a_signed_file_verifies_and_any_change_to_it_does_not() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut file = EMPTY.to_vec();
        file.extend(custom_section("name", b"payload"));
        let signed = sign(&file, &a).unwrap();
        let twice = sign(&signed, &b).unwrap();
        assert_eq!(split(&twice).unwrap().0, &file[..], "both sign the file as built");
        let both = verify(&twice, &trust(&[a, b], false)).unwrap();
        assert_eq!(both.trusted.len(), 2);
        let only_a = verify(&twice, &trust(&[a], false)).unwrap();
        assert_eq!((only_a.trusted.len(), only_a.unknown.len()), (1, 1));

        let mut tampered = signed.clone();
        tampered[10] ^= 1; // inside the signed part
        let e = verify(&tampered, &trust(&[a], false)).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // A section appended after the signature: the signature is no longer last, so the
        // file counts as unsigned.
        let mut appended = signed.clone();
        appended.extend(custom_section("more", b"x"));
        assert_eq!(verify(&appended, &trust(&[a], false)).unwrap(), Verdict::default());
    }

    #[test]
    fn admission_follows_pin_signer_and_require_signature() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let id_a = crate::keys::key_id(&public_key(&a).unwrap());
        let signed_a = sign(EMPTY, &a).unwrap();
        let signed_b = sign(EMPTY, &b).unwrap();
        let hash = crate::plugins::cache::content_hash(&signed_a);
        let t = trust(&[a, b], false);
        assert_eq!(admit(EMPTY, "h", None, &t).unwrap(), None, "unsigned is fine by default");
        let e = admit(EMPTY, "h", None, &trust(&[a], true)).unwrap_err();
        assert!(e.contains("require_signature") && e.contains("not signed"), "{e}");
        let e = admit(&signed_b, "h", None, &trust(&[a], true)).unwrap_err();
        assert!(e.contains("not in [trust] trusted_keys"), "{e}");
        assert_eq!(admit(&signed_a, &hash, None, &trust(&[a], true)).unwrap(), Some(id_a.clone()));

        let pinned = binding(Some(&hash), None);
        assert!(admit(&signed_a, &hash, Some(&pinned), &t).is_ok());
        let e = admit(&signed_b, "other", Some(&pinned), &t).unwrap_err();
        assert!(e.contains("[plugins.p] sha256"), "{e}");

        let by_a = binding(None, Some(id_a.clone()));
        assert_eq!(admit(&signed_a, "h", Some(&by_a), &t).unwrap(), Some(id_a.clone()));
        let e = admit(&signed_b, "h", Some(&by_a), &t).unwrap_err();
        assert!(e.contains(&format!("not signed by key {id_a}")) && e.contains("it is signed by"), "{e}");
        let e = admit(EMPTY, "h", Some(&by_a), &t).unwrap_err();
        assert!(e.contains("it is not signed"), "{e}");
    }

    #[test]
    fn junk_never_panics() {
        for junk in [
            &b""[..],
            b"\0asm",
            b"\0asm\x0d\0\x01\0\0\xff\xff\xff\xff\x0f",
            b"\0asm\x0d\0\x01\0\0\x05\x03abc",
        ] {
            let _ = split(junk);
            let _ = verify(junk, &TrustSpec::default());
        }
        let mut bad = EMPTY.to_vec();
        bad.extend(custom_section(SECTION, b"{\"v\":1}"));
        assert!(split(&bad).unwrap_err().contains("malformed"));
    }
}
