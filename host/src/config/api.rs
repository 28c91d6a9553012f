//! `[api]`: how much the HTTP API lets its clients hold. Every client is a stranger: a slow one
//! must not hold descriptors, a greedy one must not starve the others nor the control loop.

use super::{ConfigError, Located};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// The validated `[api]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiLimits {
    /// `header_timeout`: the longest a connection may take to send a request's head, counted
    /// from when it opened or its previous response ended (so also how long a kept-alive
    /// connection may sit idle). Default 10s.
    pub header_timeout: Duration,
    /// `request_timeout`: the longest the agent works on one request before answering 503.
    /// Default 30s. (A response that streams, `logs --follow`, is not cut by it.)
    pub request_timeout: Duration,
    /// `send_timeout`: the longest a response may wait for a client that reads none of it.
    /// Default 30s.
    pub send_timeout: Duration,
    /// `max_connections`: open connections at most. At the cap, a new connection closes the
    /// one that has waited longest for a request head; if none is waiting, it is refused.
    /// Default 256.
    pub max_connections: usize,
    /// `max_connections_per_client`: open connections from one address at most, the same rule
    /// applied among that address's own connections. Default 64.
    pub max_connections_per_client: usize,
    /// `read_threads`: threads reading the database for `/api/series` and `/api/decisions`.
    /// Default 1 (2 from 4 cores on).
    pub read_threads: usize,
    /// `read_queue`: reads that may wait for a thread; beyond, 503 at once. Default 16.
    pub read_queue: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ApiLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_client: 64,
            read_threads: (cores / 2).clamp(1, 4),
            read_queue: 16,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    header_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_client: Option<Spanned<u64>>,
    read_threads: Option<Spanned<u64>>,
    read_queue: Option<Spanned<u64>>,
}

pub(super) fn validate(raw: RawApi, at: &Located) -> Result<ApiLimits, ConfigError> {
    let d = ApiLimits::default();
    let time = |v: &Option<Spanned<String>>, field: &str, default: Duration| {
        at.duration(v, &format!("api.{field}"), Duration::from_millis(100)).map(|v| v.unwrap_or(default))
    };
    let count =
        |v: &Option<Spanned<u64>>, field: &str, range: std::ops::RangeInclusive<u64>, default: usize| {
            at.within(v, &format!("api.{field}"), range).map(|v| v.map_or(default, |v| v as usize))
        };
    let limits = ApiLimits {
        header_timeout: time(&raw.header_timeout, "header_timeout", d.header_timeout)?,
        request_timeout: time(&raw.request_timeout, "request_timeout", d.request_timeout)?,
        send_timeout: time(&raw.send_timeout, "send_timeout", d.send_timeout)?,
        // A descriptor each: far below the agent's own limit, which spawning and SQLite need.
        max_connections: count(&raw.max_connections, "max_connections", 4..=4096, d.max_connections)?,
        max_connections_per_client: count(
            &raw.max_connections_per_client,
            "max_connections_per_client",
            1..=4096,
            d.max_connections_per_client,
        )?,
        read_threads: count(&raw.read_threads, "read_threads", 1..=16, d.read_threads)?,
        read_queue: count(&raw.read_queue, "read_queue", 0..=1024, d.read_queue)?,
    };
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(api: &str) -> Result<Config, String> {
        Config::parse(&format!("[api]\n{api}"), "agent.toml".as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn limits_default_and_bad_values_name_the_field() {
        let c = parse("").unwrap();
        assert_eq!(c.api.max_connections, 256);
        assert_eq!(c.api.header_timeout, std::time::Duration::from_secs(10));
        let c = parse("header_timeout = \"2s\"\nmax_connections = 32\nread_queue = 0\n").unwrap();
        assert_eq!((c.api.header_timeout.as_secs(), c.api.max_connections, c.api.read_queue), (2, 32, 0));
        assert!(parse("max_connections = 1\n").unwrap_err().contains("api.max_connections"));
        assert!(parse("header_timeout = \"1ms\"\n").unwrap_err().contains("api.header_timeout"));
        assert!(parse("listen = 1\n").unwrap_err().contains("listen"));
    }
}
