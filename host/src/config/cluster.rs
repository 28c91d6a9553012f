//! `[cluster]`: the etcd cluster the agents of a fleet coordinate through, this agent's name in
//! it, the leader lease's timing (checked against each other at start-up), and how the agent
//! proves itself to etcd and etcd to it: the CA the members' certificates must chain to, a client
//! certificate, an etcd user. Certificate and key files are read and checked here, so a start,
//! `check-config` and a reload all name the file that is wrong.

use super::{ConfigError, Located, SecretSource};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The validated `[cluster]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// `etcd`: client URLs of the etcd members (`http://10.0.0.5:2379`), tried in turn.
    pub etcd: Vec<String>,
    /// `node`: this agent's name in the fleet. Default: the host name.
    pub node: String,
    /// `lease_ttl`: how long a leader that stopped renewing keeps its groups. Default 15s (a
    /// Kubernetes Lease's duration).
    pub lease_ttl: Duration,
    /// `renew_every`: how often the lease is renewed. Default a third of `lease_ttl`; at most
    /// half of it, so one lost renewal never loses the lease.
    pub renew_every: Duration,
    /// `request_timeout`: the longest wait for one etcd request. Default 2s; less than
    /// `renew_every`.
    pub request_timeout: Duration,
    /// `prefix`: where in etcd's key space the agents keep their keys. Default `/elastic`.
    pub prefix: String,
    /// `ca_file`: the PEM bundle the members' certificates must chain to. When given it is the
    /// only trust: the built-in web roots are not (a public CA has no say over private etcd
    /// members, and trusting every public CA would let anyone with a certificate for the
    /// member's name stand in for it). Without it, `https://` members are checked against the
    /// built-in web roots.
    pub ca: Option<Pem>,
    /// `cert_file` + `key_file`: the client certificate for members run with
    /// `--client-cert-auth`, as one PEM (certificate chain, then key).
    pub identity: Option<Pem>,
    /// `username` + `password`: the etcd user the agent authenticates as.
    pub user: Option<EtcdUser>,
}

/// PEM read from the configuration's files. Its `Debug` names the files only: a private key
/// never reaches a log through a `{:?}`.
#[derive(Clone, PartialEq)]
pub struct Pem {
    pub files: Vec<PathBuf>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({:?}, {} bytes)", self.files, self.bytes.len())
    }
}

/// An etcd user: its name and where its password is (never the password itself).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdUser {
    pub name: String,
    pub password: SecretSource,
}

/// The largest certificate or key file read: a CA bundle of a few hundred certificates.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    etcd: Vec<String>,
    node: Option<String>,
    lease_ttl: Option<Spanned<String>>,
    renew_every: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    prefix: Option<String>,
    ca_file: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
}

pub(super) fn validate(
    raw: Option<Spanned<RawCluster>>,
    at: &Located,
) -> Result<Option<ClusterSpec>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    let err = |what: &str| at.error(Some(span.clone()), &format!("cluster.{what}"));
    members(&raw.etcd).map_err(|why| err(&format!("etcd: {why}")))?;
    let node = match raw.node {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    if node.is_empty() || node.contains('/') || node.len() > 128 {
        return Err(err("node: a name of 1 to 128 characters without `/`"));
    }
    let ttl = at
        .duration(&raw.lease_ttl, "cluster.lease_ttl", Duration::from_secs(2))?
        .unwrap_or(Duration::from_secs(15));
    if ttl.subsec_nanos() != 0 {
        return Err(err("lease_ttl: whole seconds (etcd's lease TTLs are in seconds)"));
    }
    let renew =
        at.duration(&raw.renew_every, "cluster.renew_every", Duration::from_millis(100))?.unwrap_or(ttl / 3);
    if renew > ttl / 2 {
        return Err(err(&format!(
            "renew_every: {} is more than half of lease_ttl ({}): one lost renewal would lose the lease",
            crate::duration::format(renew),
            crate::duration::format(ttl)
        )));
    }
    let timeout = at
        .duration(&raw.request_timeout, "cluster.request_timeout", Duration::from_millis(50))?
        .unwrap_or(Duration::from_secs(2).min(renew));
    if timeout > renew {
        return Err(err("request_timeout: must not be more than renew_every"));
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/elastic".into()).trim_end_matches('/').to_string();
    let files = Files { at, base: base(at) };
    let tls_fields = [("ca_file", &raw.ca_file), ("cert_file", &raw.cert_file), ("key_file", &raw.key_file)];
    let tls_field = tls_fields.iter().find_map(|(name, f)| f.as_ref().map(|f| (name, f)));
    if let (Some((name, field)), Some(plain)) =
        (tls_field, raw.etcd.iter().find(|e| e.starts_with("http://")))
    {
        return Err(at.error(
            Some(field.span()),
            &format!("cluster.{name}: `{plain}` is a plain http:// member, and TLS files are for https:// ones: make every member https://, or drop ca_file, cert_file and key_file"),
        ));
    }
    let ca = raw.ca_file.as_ref().map(|f| files.ca(f)).transpose()?;
    let identity = files.identity(raw.cert_file.as_ref(), raw.key_file.as_ref())?;
    let user = user(raw.username, raw.password, at, span)?;
    Ok(Some(ClusterSpec {
        etcd: raw.etcd,
        node,
        lease_ttl: ttl,
        renew_every: renew,
        request_timeout: timeout,
        prefix,
        ca,
        identity,
        user,
    }))
}

/// The members' URLs: some, each http:// or https://, none carrying a user (a password in a URL
/// would be in /status, the log and every error naming the member).
fn members(etcd: &[String]) -> Result<(), String> {
    if etcd.is_empty() {
        return Err("list the etcd members' client URLs, e.g. [\"http://127.0.0.1:2379\"]".into());
    }
    if let Some(bad) = etcd.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(format!("`{bad}` is not an http:// or https:// URL"));
    }
    let authority =
        |e: &str| e.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("").to_string();
    if let Some(bad) = etcd.iter().map(|e| authority(e)).find(|a| a.contains('@')) {
        let host = crate::text::clean(bad.rsplit('@').next().unwrap_or(""), 128);
        return Err(format!(
            "a member URL (…@{host}) carries a user: write the member as scheme://host:port and the user in cluster.username"
        ));
    }
    Ok(())
}

/// The configuration file's folder: what relative paths in it are relative to.
fn base<'a>(at: &Located<'a>) -> &'a Path {
    at.file.and_then(Path::parent).unwrap_or(Path::new(""))
}

/// Reads the TLS files, relative to the configuration file; every error names the field and
/// the file.
struct Files<'a> {
    at: &'a Located<'a>,
    base: &'a Path,
}

impl Files<'_> {
    fn read(&self, raw: &Spanned<String>, field: &str) -> Result<(PathBuf, Vec<u8>), ConfigError> {
        let path = self.base.join(raw.get_ref());
        let fail = |why: String| {
            self.at.error(Some(raw.span()), &format!("cluster.{field}: `{}`: {why}", path.display()))
        };
        let meta = std::fs::metadata(&path).map_err(|e| fail(format!("cannot be read: {e}")))?;
        if !meta.is_file() || meta.len() > MAX_PEM_BYTES {
            return Err(fail(format!("not a PEM file of at most {} KiB", MAX_PEM_BYTES >> 10)));
        }
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot be read: {e}")))?;
        Ok((path, bytes))
    }

    /// `ca_file`: one certificate or more, each one rustls accepts as a trust anchor.
    fn ca(&self, raw: &Spanned<String>) -> Result<Pem, ConfigError> {
        let (path, bytes) = self.read(raw, "ca_file")?;
        let fail = |why: &str| {
            self.at.error(Some(raw.span()), &format!("cluster.ca_file: `{}`: {why}", path.display()))
        };
        if !contains(&bytes, b"-----BEGIN CERTIFICATE-----") {
            return Err(fail("holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA that signed the etcd members' certificates"));
        }
        crate::pki::https_client(Duration::from_secs(1), Some(&bytes), None)
            .map_err(|e| fail(&format!("not a usable CA certificate: {e}")))?;
        Ok(Pem { files: vec![path], bytes })
    }

    /// `cert_file` + `key_file`: both or neither; the certificate (chain) and an unencrypted
    /// private key that rustls can use.
    fn identity(
        &self,
        cert: Option<&Spanned<String>>,
        key: Option<&Spanned<String>>,
    ) -> Result<Option<Pem>, ConfigError> {
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(c), None) => {
                return Err(self.at.error(Some(c.span()), "cluster.key_file: missing: a client certificate (cert_file) needs its private key in key_file"))
            }
            (None, Some(k)) => {
                return Err(self.at.error(Some(k.span()), "cluster.cert_file: missing: a private key (key_file) needs its certificate in cert_file"))
            }
        };
        let (cert_path, cert_pem) = self.read(cert, "cert_file")?;
        let (key_path, key_pem) = self.read(key, "key_file")?;
        let fail = |raw: &Spanned<String>, field: &str, path: &Path, why: &str| {
            self.at.error(Some(raw.span()), &format!("cluster.{field}: `{}`: {why}", path.display()))
        };
        if !contains(&cert_pem, b"-----BEGIN CERTIFICATE-----") {
            return Err(fail(
                cert,
                "cert_file",
                &cert_path,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        }
        if contains(&key_pem, b"ENCRYPTED PRIVATE KEY") {
            return Err(fail(key, "key_file", &key_path, "the key is encrypted; the agent needs it unencrypted (keep the file 0600, readable by the agent only)"));
        }
        if !contains(&key_pem, b"PRIVATE KEY-----") {
            return Err(fail(
                key,
                "key_file",
                &key_path,
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            ));
        }
        if contains(&cert_pem, b"PRIVATE KEY-----") {
            return Err(fail(
                cert,
                "cert_file",
                &cert_path,
                "holds a private key: put the key in key_file and only certificates here",
            ));
        }
        let mut bytes = cert_pem;
        bytes.push(b'\n');
        bytes.extend_from_slice(&key_pem);
        crate::pki::https_client(Duration::from_secs(1), None, Some(&bytes)).map_err(|e| {
            self.at.error(
                Some(key.span()),
                &format!("cluster.cert_file/key_file: `{}` with `{}`: not a usable client certificate and key: {e}", cert_path.display(), key_path.display()),
            )
        })?;
        Ok(Some(Pem { files: vec![cert_path, key_path], bytes }))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `username` + `password`: both or neither. The password is a secret (`{ env = "VAR" }` or
/// `{ file = "/path" }`, parsed as every secret of the file is), read here once so that a
/// missing one is a configuration error, and again at each authentication (a rotated file is
/// picked up).
fn user(
    name: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    at: &Located,
    table: std::ops::Range<usize>,
) -> Result<Option<EtcdUser>, ConfigError> {
    let (name, password) = match (name, password) {
        (None, None) => return Ok(None),
        (Some(n), Some(p)) => (n, p),
        (Some(n), None) => {
            return Err(at.error(Some(n.span()), "cluster.password: missing: cluster.username needs a password, { env = \"VAR\" } or { file = \"/path\" }"))
        }
        (None, Some(p)) => {
            // Refuse a literal password without echoing it, before saying the user is missing.
            super::secret_source(p, "cluster.password", at)?;
            return Err(at.error(Some(table), "cluster.username: missing: cluster.password is for an etcd user; name it in username"));
        }
    };
    let span = name.span();
    let name = name.into_inner();
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(at.error(Some(span), "cluster.username: 1 to 128 printable characters"));
    }
    let pspan = password.span();
    let source = match super::secret_source(password, "cluster.password", at)? {
        // Relative to the configuration file, as ca_file, cert_file and key_file are.
        SecretSource::File(path) => SecretSource::File(base(at).join(path)),
        env => env,
    };
    match source.read() {
        None => Err(at.error(Some(pspan), &format!("cluster.password: {source:?} cannot be read: set the variable, or make the file readable by the agent"))),
        Some(p) if p.is_empty() => Err(at.error(Some(pspan), &format!("cluster.password: {source:?} is empty"))),
        Some(_) => Ok(Some(EtcdUser { name, password: source })),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(cluster: &str) -> Result<Config, String> {
        Config::parse(&format!("[cluster]\n{cluster}"), "agent.toml".as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_lease_and_a_bad_relation_is_refused() {
        let c = parse("etcd = [\"http://127.0.0.1:2379\"]\nnode = \"a\"\n").unwrap().cluster.unwrap();
        assert_eq!((c.lease_ttl.as_secs(), c.renew_every.as_secs(), c.request_timeout.as_secs()), (15, 5, 2));
        assert_eq!(c.prefix, "/elastic");
        let e = parse("etcd = [\"http://e:2379\"]\nlease_ttl = \"10s\"\nrenew_every = \"6s\"\n").unwrap_err();
        assert!(e.contains("cluster.renew_every: 6s is more than half of lease_ttl (10s)"), "{e}");
        let e = parse("etcd = []\n").unwrap_err();
        assert!(e.contains("cluster.etcd: list the etcd members"), "{e}");
        let e = parse("etcd = [\"127.0.0.1:2379\"]\n").unwrap_err();
        assert!(e.contains("is not an http://"), "{e}");
        let e = parse("etcd = [\"http://e:2379\"]\nlease_ttl = \"2500ms\"\n").unwrap_err();
        assert!(e.contains("whole seconds"), "{e}");
    }

    /// A throwaway CA and a client certificate it signed, with its key (made with `openssl`,
    /// valid for a century; used only to check parsing here).
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUHKqxMwKN6kqH3wkvWUCo+TGT6mowCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMCAXDTI2MTIwMzIxMzIyNFoYDzIxMjYx
MTA5MjEzMjI0WjAXMRUwEwYDVQQDDAx1bml0LXRlc3QtY2EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAS7A5SoVZozv/BMqDT+gZ2gW54cbjfJU01hx54tQwT6dOCI
tV+Rpr8TXDjPSIOoSYBR2/5jf/jtvFo32rM+0IL5o2MwYTAdBgNVHQ4EFgQUB5n0
I8Gs7bBOSjWtCKjxqpxZLZ8wHwYDVR0jBBgwFoAUB5n0I8Gs7bBOSjWtCKjxqpxZ
LZ8wDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZIzj0EAwID
SAAwRQIgEATAryCvGSsGZkO6VRA5t1KMgt22xr06Jzikl8PpKqICIQCIdWKqUuB4
nJifLfBLfsiR8Xt+Tqhje+7foXmelnPTsw==
-----END CERTIFICATE-----
";
    const CLIENT: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASigAwIBAgIUQM7xokOTPrRQSWrJzOIHE87GgYswCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMCAXDTI2MTIwMzIxMzIyNFoYDzIxMjYx
MTA5MjEzMjI0WjAQMQ4wDAYDVQQDDAVhZ2VudDBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABBxLlOJXD7P4XIM/2I5M+1Rj7N99VSuedDoe1H1okf7UaHSXBM+75HiH
Lacq7aGS+HNfq6CghBdxjsl8AyiXh/6jVzBVMBMGA1UdJQQMMAoGCCsGAQUFBwMC
MB0GA1UdDgQWBBTqr0lc6PHSbPBE0qtE0Zqv8ogQSjAfBgNVHSMEGDAWgBQHmfQj
waztsE5KNa0IqPGqnFktnzAKBggqhkjOPQQDAgNIADBFAiEAi/ZtIyLFyatal3eO
iia1IjrATQMs1GUExKgxHwThhm0CIF5J/k6pK5zKl7qk+KjW8bckekOqNbpwuFKO
d6N/e7ew
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQVXGtHVBVPM8xpBK
KfFVDGKvbQoVIimH8/Fj5GDjP5OhRANCAAQcS5TiVw+z+FyDP9iOTPtUY+zffVUr
nnQ6HtR9aJH+1Gh0lwTPu+R4hy2nKu2hkvhzX6ugoIQXcY7JfAMol4f+
-----END PRIVATE KEY-----
";

    /// `[cluster]` with `extra`, in a file of a folder holding the PEM files above (and
    /// `password`, a secret file), validated.
    fn secured(extra: &str) -> (tempfile::TempDir, Result<Config, String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in
            [("ca.pem", CA), ("client.pem", CLIENT), ("client.key", KEY), ("password", "s3cret\n")]
        {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("garbage.pem"), "hello").unwrap();
        // A key of its own, not the client certificate's.
        let other = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi9yd+TIJbgQEpjSz
tI5F4W4dCyxLWYRhkPdes27V2tqhRANCAATmqNjLEpweaonGQOZ2Kk2OBEUjdBf7
KxNusb6+v4tuSVSNHqg49px1aTckKsFYg9V2jZD0kXcMkIiiTVLtmZEC
-----END PRIVATE KEY-----
";
        std::fs::write(dir.path().join("other.key"), other).unwrap();
        let bad = CA.replace("MIIBlTCCATugAwIBAgIU", "MIIBlTCCATugAwIBAgIA");
        std::fs::write(dir.path().join("broken.pem"), bad).unwrap();
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        std::fs::write(dir.path().join("enc.key"), enc).unwrap();
        let text = format!("[cluster]\netcd = [\"https://127.0.0.1:2379\"]\nnode = \"a\"\n{extra}");
        let config = Config::parse(&text, &dir.path().join("agent.toml")).map_err(|e| e.to_string());
        (dir, config)
    }

    #[test]
    fn tls_files_are_read_relative_to_the_configuration_and_never_shown() {
        let (dir, c) =
            secured("ca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"client.key\"\n");
        let c = c.unwrap().cluster.unwrap();
        assert_eq!(c.ca.as_ref().unwrap().files, vec![dir.path().join("ca.pem")]);
        assert_eq!(c.ca.as_ref().unwrap().bytes, CA.as_bytes());
        let identity = c.identity.as_ref().unwrap();
        assert_eq!(identity.files, vec![dir.path().join("client.pem"), dir.path().join("client.key")]);
        assert!(String::from_utf8_lossy(&identity.bytes).contains("BEGIN PRIVATE KEY"));
        // What a `{:?}` of the configuration shows: the files, not the key.
        let shown = format!("{c:?}");
        assert!(
            shown.contains("client.key") && !shown.contains("PRIVATE") && !shown.contains("MIGH"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_tls_file_is_refused_naming_the_field_and_the_file() {
        let cases = [
            ("ca_file = \"nope.pem\"\n", "cluster.ca_file: `", "nope.pem`: cannot be read: No such file"),
            ("ca_file = \"garbage.pem\"\n", "cluster.ca_file: `", "garbage.pem`: holds no PEM certificate"),
            ("ca_file = \"broken.pem\"\n", "cluster.ca_file: `", "broken.pem`: not a usable CA certificate"),
            ("ca_file = \".\"\n", "cluster.ca_file: `", "`: not a PEM file of at most 1024 KiB"),
            (
                "cert_file = \"client.pem\"\n",
                "cluster.key_file: missing",
                "needs its private key in key_file",
            ),
            (
                "key_file = \"client.key\"\n",
                "cluster.cert_file: missing",
                "needs its certificate in cert_file",
            ),
            (
                "cert_file = \"client.pem\"\nkey_file = \"enc.key\"\n",
                "cluster.key_file: `",
                "enc.key`: the key is encrypted",
            ),
            (
                "cert_file = \"client.pem\"\nkey_file = \"ca.pem\"\n",
                "cluster.key_file: `",
                "ca.pem`: holds no PEM private key",
            ),
            (
                "cert_file = \"client.key\"\nkey_file = \"client.key\"\n",
                "cluster.cert_file: `",
                "client.key`: holds no PEM certificate",
            ),
            (
                "cert_file = \"ca.pem\"\nkey_file = \"garbage.pem\"\n",
                "cluster.key_file: `",
                "garbage.pem`: holds no PEM private key",
            ),
            (
                "cert_file = \"client.pem\"\nkey_file = \"other.key\"\n",
                "cluster.cert_file/key_file: `",
                "other.key`: not a usable client certificate and key",
            ),
        ];
        for (extra, field, why) in cases {
            let e = secured(extra).1.unwrap_err();
            assert!(e.contains(field) && e.contains(why), "{extra}: {e}");
            assert!(e.contains("agent.toml:"), "the line is named: {e}");
        }
    }

    #[test]
    fn tls_options_need_https_members_and_urls_carry_no_user() {
        let e = parse("etcd = [\"https://a:2379\", \"http://b:2379\"]\nca_file = \"ca.pem\"\n").unwrap_err();
        assert!(e.contains("cluster.ca_file: `http://b:2379` is a plain http:// member, and TLS files are for https:// ones"), "{e}");
        let e = parse("etcd = [\"https://root:pw@a:2379\"]\n").unwrap_err();
        assert!(
            e.contains("cluster.etcd: a member URL (…@a:2379) carries a user") && !e.contains("pw"),
            "{e}"
        );
        assert!(
            parse("etcd = [\"http://a:2379/v3@x\"]\nnode = \"a\"\n").is_ok(),
            "an @ in the path is not a user"
        );
    }

    #[test]
    fn an_etcd_user_needs_a_password_from_a_secret_never_a_literal() {
        let (dir, c) = secured("username = \"agent\"\npassword = { file = \"password\" }\n");
        let user = c.unwrap().cluster.unwrap().user.unwrap();
        assert_eq!(user.name, "agent");
        assert_eq!(user.password, crate::config::SecretSource::File(dir.path().join("password")));
        assert_eq!(user.password.read().as_deref(), Some("s3cret"));
        let e = secured("username = \"agent\"\npassword = \"hunter2-literal\"\n").1.unwrap_err();
        assert!(
            e.contains("cluster.password: a secret's value does not belong in the configuration file"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "never echoed: {e}");
        let e = secured("username = \"agent\"\n").1.unwrap_err();
        assert!(e.contains("cluster.password: missing: cluster.username needs a password"), "{e}");
        let e = secured("password = { file = \"password\" }\n").1.unwrap_err();
        assert!(e.contains("cluster.username: missing"), "{e}");
        let e = secured("username = \"agent\"\npassword = { env = \"AGENT_TEST_NO_SUCH_VARIABLE\" }\n")
            .1
            .unwrap_err();
        assert!(e.contains("cluster.password: env:AGENT_TEST_NO_SUCH_VARIABLE cannot be read"), "{e}");
        let e = secured("username = \"\"\npassword = { file = \"password\" }\n").1.unwrap_err();
        assert!(e.contains("cluster.username: 1 to 128 printable characters"), "{e}");
    }

    #[test]
    fn a_cluster_group_needs_a_cluster() {
        let group = "[[group]]\nname = \"g\"\npolicy = \"p\"\nbackend = \"b\"\nmin = 1\nmax = 2\ncoordination = \"cluster\"\n";
        let e = Config::parse(group, "agent.toml".as_ref()).unwrap_err().to_string();
        assert!(e.contains("group[g].coordination: `cluster` needs a [cluster] table"), "{e}");
        let text = format!("[cluster]\netcd = [\"http://e:2379\"]\n{group}");
        assert!(Config::parse(&text, "agent.toml".as_ref()).unwrap().groups[0].coordinated);
        let e = Config::parse(&group.replace("\"cluster\"", "\"fleet\""), "agent.toml".as_ref()).unwrap_err();
        assert!(e.to_string().contains("`fleet` is not local or cluster"), "{e}");
    }
}
