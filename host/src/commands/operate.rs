//! Commands that operate the running agent through its API with the token of its data folder:
//! `restart|stop|start|scale`, `logs`, `reload`; and `check-config`, which needs no agent.

use super::{agent_url, http, runtime, unreachable, Exit, ProcessAction, RunOptions};
use crate::config::Config;
use anyhow::Context;

/// Where the running agent is (its API address and data folder). A file being edited may not
/// validate — that is what `reload` is for — so only `[agent] listen` and `data_dir` are read
/// from it then, as written, with the command-line overrides on top.
pub(super) fn locate(options: RunOptions) -> anyhow::Result<Config> {
    match options.clone().resolve() {
        Ok(config) => Ok(config),
        Err(strict) => {
            let Some(path) = &options.config else { return Err(strict) };
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let table =
                toml::from_str::<toml::Table>(&text).ok().or_else(|| agent_table(&text)).ok_or(strict)?;
            let mut config = Config::defaults();
            let agent = table.get("agent").and_then(|a| a.as_table());
            if let Some(listen) = agent.and_then(|a| a.get("listen")).and_then(|l| l.as_str()) {
                config.listen =
                    listen.parse().with_context(|| format!("{}: agent.listen", path.display()))?;
            }
            if let Some(dir) = agent.and_then(|a| a.get("data_dir")).and_then(|d| d.as_str()) {
                config.data_dir = path.parent().unwrap_or(std::path::Path::new("")).join(dir);
            }
            Ok(options.overriding(config))
        }
    }
}

/// The file's `[agent]` table alone, when the rest does not parse (a reload refused for a
/// broken group must not keep `agent status` from finding the agent to say so).
fn agent_table(text: &str) -> Option<toml::Table> {
    let mut lines = text.lines().skip_while(|l| l.trim() != "[agent]");
    let Some(header) = lines.next() else {
        // No `[agent]` table (nor `agent.` keys, which would be the broken part): the defaults.
        let mentioned = |l: &str| l.trim_start().starts_with("agent") || l.contains("[agent");
        return (!text.lines().any(mentioned)).then(toml::Table::new);
    };
    let body: Vec<&str> = lines.take_while(|l| !l.trim_start().starts_with('[')).collect();
    toml::from_str(&format!("{header}\n{}", body.join("\n"))).ok()
}

/// The running agent's token, from its data folder.
fn token(config: &Config) -> anyhow::Result<String> {
    let path = config.data_dir.join(crate::api::TOKEN_FILE);
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!("reading the API token {} (--data-dir must be the running agent's)", path.display())
    })?;
    Ok(token.trim().to_string())
}

/// `agent restart|stop|start NAME`, `agent scale NAME N`: a request with the agent's token.
pub fn control(options: RunOptions, action: ProcessAction) -> anyhow::Result<Exit> {
    let config = locate(options)?;
    let token = token(&config)?;
    let path = match &action {
        ProcessAction::Restart(n) => format!("/processes/{n}/restart"),
        ProcessAction::Stop(n) => format!("/processes/{n}/stop"),
        ProcessAction::Start(n) => format!("/processes/{n}/start"),
        ProcessAction::Scale(n, count) => format!("/processes/{n}/replicas/{count}"),
    };
    runtime()?.block_on(async {
        let response = http()
            .post(agent_url(&config, &path))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unreachable(&config, e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            print!("{body}");
            Ok(Exit::Success)
        } else {
            anyhow::bail!("{}", body.trim())
        }
    })
}

/// `agent logs` options.
pub struct LogsArgs {
    pub name: String,
    pub replica: Option<u32>,
    pub follow: bool,
    pub lines: usize,
}

/// `agent logs NAME [--replica N] [-f] [-n LINES]`: an instance's recent output, from the
/// agent's in-memory ring; with `-f`, new lines as they come until interrupted.
pub fn logs(options: RunOptions, args: LogsArgs) -> anyhow::Result<Exit> {
    use std::io::Write;
    let config = locate(options)?;
    let token = token(&config)?;
    let mut path = format!("/processes/{}/logs?lines={}&follow={}", args.name, args.lines, args.follow);
    if let Some(r) = args.replica {
        path.push_str(&format!("&replica={r}"));
    }
    // Following has no end: no overall timeout.
    let client = reqwest::Client::builder().no_proxy().build().context("building the HTTP client")?;
    runtime()?.block_on(async {
        let mut response = client
            .get(agent_url(&config, &path))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unreachable(&config, e))?;
        if !response.status().is_success() {
            anyhow::bail!("{}", response.text().await.unwrap_or_default().trim());
        }
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = response.chunk().await.context("reading the output from the agent")? {
            out.write_all(&chunk)?;
            out.flush()?;
        }
        Ok(Exit::Success)
    })
}

/// `agent reload`: the running agent re-reads its configuration file. Prints what changed and
/// what the new configuration leaves wrong (exit 1 then: applied, with a problem); a file that
/// does not validate changes nothing and exits 2 with the error.
pub fn reload(options: RunOptions) -> anyhow::Result<Exit> {
    let config = locate(options)?;
    let token = token(&config)?;
    runtime()?.block_on(async {
        let response = http()
            .post(agent_url(&config, "/reload"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unreachable(&config, e))?;
        let status = response.status();
        let text = response.text().await.context("reading the agent's answer")?;
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"error": text.trim()}));
        if status.is_success() {
            println!("reloaded: {}", body["summary"].as_str().unwrap_or_default());
            let lines = |key: &str| -> Vec<String> {
                let list = body["changes"][key].as_array().cloned().unwrap_or_default();
                list.iter().filter_map(|v| v.as_str().map(String::from)).collect()
            };
            let needs = lines("restart_required");
            if !needs.is_empty() {
                println!("needs a restart of the agent to take effect: {}", needs.join(", "));
            }
            let loading = lines("still_loading");
            if !loading.is_empty() {
                println!("still loading: {} (checked once loaded: agent status)", loading.join(", "));
            }
            // Applied, but not working as written: the caller must hear it, not only the log.
            let problems = lines("problems");
            for p in &problems {
                println!("problem: {p}");
            }
            Ok(if problems.is_empty() { Exit::Success } else { Exit::SomeFailed })
        } else if status == reqwest::StatusCode::BAD_REQUEST {
            let error = body["error"].as_str().unwrap_or_default();
            Err(crate::config::ConfigError(format!("reload refused, nothing changed: {error}")).into())
        } else {
            anyhow::bail!("reload failed: HTTP {status}: {}", body["error"].as_str().unwrap_or_default())
        }
    })
}

/// `agent check-config [--config F]`: validates the configuration without running anything.
/// Exit 0 and a one-line summary, or exit 2 and the error a reload or start would give.
pub fn check_config(options: RunOptions) -> anyhow::Result<Exit> {
    let file = options.config.clone();
    let config = options.validate()?;
    let file = file.map(|f| f.display().to_string()).unwrap_or_else(|| "the default configuration".into());
    println!(
        "{file}: ok (processes: {}, groups: {}, plugin tables: {})",
        config.processes.len(),
        config.groups.len(),
        config.plugins.len()
    );
    // Allowed, but worth saying (the daemon logs the same when the plugin loads).
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agent_table_is_read_though_a_group_does_not_parse() {
        let text = "[agent]\nlisten = \"127.0.0.1:9\" # here\n\n[[group]]\nname = { oops\n";
        let table = super::agent_table(text).unwrap();
        assert_eq!(table["agent"]["listen"].as_str(), Some("127.0.0.1:9"));
        assert!(super::agent_table("[agent\nlisten = 1\n").is_none());
        assert_eq!(super::agent_table("[[group]]\nname = {\n"), Some(toml::Table::new()));
    }
}
