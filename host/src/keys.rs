//! Ed25519 keys as files: the PEM forms OpenSSL reads and writes (`openssl genpkey -algorithm
//! ed25519`, `openssl pkey -pubout`), and the short id that names a public key in `agent.toml`.
//! Pure formats, no cryptography: signing and verifying are in `plugins::signature`.

use base64::Engine as _;

/// DER of a PKCS#8 v1 Ed25519 private key (RFC 8410) up to the 32-byte seed.
const PRIVATE_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) up to the 32-byte key.
const PUBLIC_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A public key's id: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn key_id(public: &[u8; 32]) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(public);
    hex::encode(&digest[..8])
}

/// The 32 bytes of an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn parse_public_pem(text: &str) -> Result<[u8; 32], String> {
    let der = pem_body(text, "PUBLIC KEY")?;
    der.strip_prefix(&PUBLIC_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| "is not an Ed25519 public key (make one with `agent plugins keygen`)".to_string())
}

/// The 32-byte seed of an Ed25519 private key in PEM (`-----BEGIN PRIVATE KEY-----`, PKCS#8 v1
/// as OpenSSL writes it).
pub fn parse_private_pem(text: &str) -> Result<[u8; 32], String> {
    let der = pem_body(text, "PRIVATE KEY")?;
    der.strip_prefix(&PRIVATE_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| "is not an Ed25519 private key (make one with `agent plugins keygen`)".to_string())
}

/// A public key as PEM.
pub fn public_pem(public: &[u8; 32]) -> String {
    pem("PUBLIC KEY", &[&PUBLIC_PREFIX[..], public].concat())
}

/// A private key (its seed) as PEM.
pub fn private_pem(seed: &[u8; 32]) -> String {
    pem("PRIVATE KEY", &[&PRIVATE_PREFIX[..], seed].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let start = text.find(&begin).ok_or_else(|| format!("has no `{begin}` line"))? + begin.len();
    let stop = text[start..].find(&end).ok_or_else(|| format!("has no `{end}` line"))? + start;
    let body: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("has a PEM body that is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_are_refused_as_the_other_kind() {
        let (seed, public) = ([7u8; 32], [9u8; 32]);
        assert_eq!(parse_private_pem(&private_pem(&seed)).unwrap(), seed);
        assert_eq!(parse_public_pem(&public_pem(&public)).unwrap(), public);
        assert!(parse_public_pem(&private_pem(&seed)).is_err());
        assert!(parse_private_pem("junk").unwrap_err().contains("BEGIN PRIVATE KEY"));
        assert_eq!(key_id(&public).len(), 16);
        assert_ne!(key_id(&public), key_id(&seed));
    }

    #[test]
    fn reads_what_openssl_writes() {
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` of that key.
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIP9+dlqgfg54CcWvRRSMhxZVThkLC4KUnek9b7OATJrR\n-----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA2erFf2fwDQlfuz1jASwgnGdXitS1uF7+ajVd6rCt6yE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(parse_private_pem(private).unwrap()[..2], [0xff, 0x7e]);
        assert_eq!(parse_public_pem(public).unwrap()[..2], [0xd9, 0xea]);
    }
}
