//! `scheme://host:port` origins: what an outbound-HTTP grant names and what a request is checked
//! against. Both sides go through [`Origin::normalise`], so there is one normalisation to trust.

use std::fmt;

/// A normalised HTTP origin: lower-case scheme and host, no trailing dot, explicit port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl Origin {
    /// Parses a grant such as `http://127.0.0.1:8080` or `https://keystone.example.com`.
    /// A path other than `/`, a query, or user information is refused: a grant names an origin.
    pub fn parse_grant(text: &str) -> Result<Origin, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("`{text}` is not an origin: write `http://host:port` or `https://host`")
        })?;
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("`{text}`: only http and https origins can be granted"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(format!("`{text}`: a grant names an origin only, without a path or query"));
        }
        Self::normalise(scheme, authority).map_err(|e| format!("`{text}`: {e}"))
    }

    /// Builds the origin of an outgoing request from its scheme and authority (`host[:port]`).
    /// `None` scheme means plain http. Fails on anything ambiguous (user information, bad port).
    pub fn of_request(scheme: Option<&str>, authority: &str) -> Result<Origin, String> {
        let scheme = match scheme {
            None => Scheme::Http,
            Some(s) => Scheme::parse(s).ok_or_else(|| format!("scheme `{s}` is not http(s)"))?,
        };
        Self::normalise(scheme, authority)
    }

    /// Whether the host is this machine (127.0.0.0/8, `::1`, `localhost`) or link-local
    /// (169.254.0.0/16, `fe80::/10`: cloud metadata services, plain HTTP by design): what
    /// plain HTTP may reach without crossing a network someone else can read.
    pub fn is_loopback_or_link_local(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
            Ok(std::net::IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => v4.is_loopback() || v4.is_link_local(),
                None => ip.is_loopback() || ip.is_unicast_link_local(),
            },
            Err(_) => false,
        }
    }

    fn normalise(scheme: Scheme, authority: &str) -> Result<Origin, String> {
        if authority.contains('@') {
            return Err("user information in the authority is not allowed".into());
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            // IPv6 literal: [::1]:8080
            let (host, after) = rest.split_once(']').ok_or("unclosed `[` in host")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after `]`")?),
            };
            (format!("[{}]", host.to_ascii_lowercase()), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '%') {
            return Err(format!("`{host}` is not a host name"));
        }
        let port = match port {
            None | Some("") => scheme.default_port(),
            Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port"))?,
        };
        Ok(Origin { scheme, host, port })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(t: &str) -> Origin {
        Origin::parse_grant(t).unwrap()
    }

    #[test]
    fn default_ports_case_and_trailing_dots_normalise_to_one_origin() {
        let a = grant("http://Example.COM");
        assert_eq!(a, grant("http://example.com:80/"));
        assert_eq!(a, Origin::of_request(Some("HTTP"), "example.com.:80").unwrap());
        assert_ne!(a, grant("https://example.com"));
        assert_eq!(grant("https://example.com").port, 443);
    }

    #[test]
    fn ipv6_literals_keep_their_brackets() {
        let o = grant("http://[::1]:8080");
        assert_eq!(o.host, "[::1]");
        assert_eq!(o, Origin::of_request(None, "[::1]:8080").unwrap());
    }

    #[test]
    fn loopback_and_link_local_hosts_are_told_from_the_network() {
        let local = |t: &str| grant(t).is_loopback_or_link_local();
        for t in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1",
            "http://LocalHost.:9090",
            "http://[::1]:80",
            "http://[::ffff:127.0.0.1]",
            "http://169.254.169.254",
            "http://[fe80::1]:80",
            "http://[FEBF::1]",
        ] {
            assert!(local(t), "{t}");
        }
        for t in [
            "http://10.0.0.5:5000",
            "http://192.168.1.1",
            "http://keystone.example",
            "http://localhost.example",
            "http://128.0.0.1",
            "http://169.255.0.1",
            "http://[fec0::1]",
            "http://[2001:db8::1]",
            "http://[::ffff:10.0.0.1]",
        ] {
            assert!(!local(t), "{t}");
        }
    }

    #[test]
    fn grants_with_paths_userinfo_or_other_schemes_are_refused() {
        assert!(Origin::parse_grant("http://h/api").unwrap_err().contains("origin only"));
        assert!(Origin::parse_grant("ftp://h").unwrap_err().contains("only http"));
        assert!(Origin::parse_grant("h:80").unwrap_err().contains("not an origin"));
        assert!(Origin::parse_grant("http://u@h").unwrap_err().contains("user information"));
        assert!(Origin::of_request(None, "allowed.example@evil.example").is_err());
        assert!(Origin::of_request(None, "h:99999").is_err());
    }
}
