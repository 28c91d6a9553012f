//! `[cluster]`: the etcd cluster the agents of a fleet coordinate through, this agent's name in
//! it, and the leader lease's timing (checked against each other at start-up).

use super::{ConfigError, Located};
use serde::Deserialize;
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    etcd: Vec<String>,
    node: Option<String>,
    lease_ttl: Option<Spanned<String>>,
    renew_every: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    prefix: Option<String>,
}

pub(super) fn validate(
    raw: Option<Spanned<RawCluster>>,
    at: &Located,
) -> Result<Option<ClusterSpec>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    let err = |what: &str| at.error(Some(span.clone()), &format!("cluster.{what}"));
    if raw.etcd.is_empty() {
        return Err(err("etcd: list the etcd members' client URLs, e.g. [\"http://127.0.0.1:2379\"]"));
    }
    if let Some(bad) = raw.etcd.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(err(&format!("etcd: `{bad}` is not an http:// or https:// URL")));
    }
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
    Ok(Some(ClusterSpec {
        etcd: raw.etcd,
        node,
        lease_ttl: ttl,
        renew_every: renew,
        request_timeout: timeout,
        prefix,
    }))
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
