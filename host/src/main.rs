//! The `agent` command line: parse arguments, call the library, print the error, exit.
//! Exit codes: 0 success; 1 the command failed (or, for `plugins list`, a file did not load);
//! 2 bad usage or configuration.

use agent::commands::{self, Exit, ProcessAction};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "agent", version, about = "Elastic-scaling host agent with WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default when no command is given).
    Run(RunArgs),
    /// Look at plugin files without running an agent.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Read the metrics database (works while the agent runs).
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Replay a demand trace (CSV) through a group's policy and guardrails, offline, and score it.
    Simulate {
        #[command(flatten)]
        args: commands::SimulateArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Replay a group's recorded history (the agent's database) through its running policy and
    /// candidate settings, walk-forward, and recommend a policy_config at least as good on cost
    /// and time under-provisioned. Changes nothing; runs at nice 19.
    Tune {
        #[command(flatten)]
        args: commands::TuneArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The decision journal of the scaling groups (works while the agent runs). Holds that say
    /// the same are one line (`hold ×N`), as on the page.
    Decisions {
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// How far back: 10m, 1h, 2d. Default 1h.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        since: std::time::Duration,
        /// One line per journal row, holds with other inputs not joined (the journal itself
        /// keeps one row for identical holds, with their count).
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: commands::Format,
        #[command(flatten)]
        run: RunArgs,
    },
    /// A summary of the running agent: processes, groups, plugins, and what needs attention
    /// (exit 1 when something does).
    Status {
        /// Print /status as JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// List the running agent's supervised processes.
    Ps {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Restart a supervised process now (also clears a `failed` state).
    Restart {
        name: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Stop a supervised process gracefully; it stays stopped until `agent start`.
    Stop {
        name: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Start a stopped or failed supervised process.
    Start {
        name: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Set the number of replicas of a supervised process.
    Scale {
        name: String,
        replicas: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show a supervised process's recent output (kept in memory by the agent); -f follows it.
    Logs {
        name: String,
        /// Only this replica (default: all, each line prefixed with NAME-REPLICA).
        #[arg(long)]
        replica: Option<u32>,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// Lines of history to show first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Make the running agent re-read its configuration file (as SIGHUP does); prints what changed.
    Reload {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validate a configuration file without running anything; exit 2 with the error if invalid.
    CheckConfig {
        #[command(flatten)]
        run: RunArgs,
    },
    /// This machine's storage: grow a mounted filesystem once the volume under it grew.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Print a shell completion script: `agent completions bash > /etc/bash_completion.d/agent`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `agent man > agent.1 && man ./agent.1`.
    Man,
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Every series (name and labels) with its latest raw sample.
    List {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: commands::Format,
    },
    /// The points of one metric over a time range.
    Query {
        /// Metric name, e.g. system.cpu.utilization.
        name: String,
        /// Only series with this label (repeatable): --label cpu=0.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// How far back from now (or from --to): 10m, 1h, 2d. Default 10m.
        #[arg(long, value_parser = parse_duration, conflicts_with = "from")]
        since: Option<std::time::Duration>,
        /// Start of the range: RFC 3339 (2026-11-27T10:00:00Z) or Unix seconds.
        #[arg(long)]
        from: Option<String>,
        /// End of the range (exclusive). Default now.
        #[arg(long)]
        to: Option<String>,
        /// Average into buckets of this length: 30s, 1m. Default: raw points.
        #[arg(long, value_parser = parse_duration)]
        step: Option<std::time::Duration>,
        #[arg(long, value_enum, default_value = "table")]
        format: commands::Format,
        #[command(flatten)]
        run: RunArgs,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("`{text}` is not key=value"))?;
    Ok((k.to_string(), v.to_string()))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    agent::duration::parse(text)
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Grow the filesystem mounted at MOUNT_POINT online to fill its block device: waits until
    /// the kernel sees the volume's new size, grows its partition (growpart) if it sits on one,
    /// then the filesystem (xfs_growfs, btrfs filesystem resize, resize2fs). Needs root. Exit 1
    /// with what to run by hand when a step fails.
    Grow {
        mount_point: PathBuf,
        /// The volume's new size (2GiB, 512MiB, bytes): wait until the kernel sees that much.
        #[arg(long, value_parser = agent::commands::parse_size)]
        size: Option<u64>,
        /// How long to wait for the kernel to see --size.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        wait: std::time::Duration,
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RegistryArgs {
    /// Allow plain HTTP to a registry beyond loopback (credentials and the component travel in
    /// clear). Credentials: AGENT_REGISTRY_USERNAME and AGENT_REGISTRY_PASSWORD (or _FILE).
    #[arg(long)]
    insecure_registry: bool,
}

impl RegistryArgs {
    fn access(&self) -> commands::publish::Access {
        commands::publish::Access { insecure: self.insecure_registry }
    }
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Publish a component to an OCI registry: REF = oci://HOST[:PORT]/REPO:TAG.
    Push {
        file: PathBuf,
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Install a component from an OCI registry (REF by tag or @sha256:…) into the plugins
    /// folder, verified; records its binding (sha256, source) in agent.toml and reloads the agent.
    Install {
        reference: String,
        /// Print the [plugins.NAME] table instead of editing agent.toml.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// For each plugin installed from a tag: whether the tag names another build now.
    Outdated {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Install again what a plugin's tag names now, and rebind it.
    Upgrade {
        name: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print a plugin's kind, contract version, metadata, config keys and imports.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// `--data-dir` (or `--config`): whose compile cache to use and fill.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Write a new plugin project (Rust, Python or JavaScript) that builds to a .wasm with one command.
    New {
        /// The plugin's name: lower-case letters, digits and `-`.
        name: String,
        #[arg(long, value_enum)]
        kind: agent::scaffold::Kind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: agent::scaffold::Lang,
        /// Where to create the project folder NAME. Default: the current folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The agent's plugins/sdk (Rust). Default: $ELASTIC_SDK, else the source tree the agent was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// One line per .wasm file in the folder: name, kind, version, and `ok` or the error.
    List {
        #[command(flatten)]
        run: RunArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make an Ed25519 key pair for signing plugins: KEY (private, 0600) and KEY.pub.
    Keygen {
        /// Where to write the private key; the public key goes beside it as KEY.pub.
        key: PathBuf,
    },
    /// Sign a plugin: append an Ed25519 signature by KEY to FILE (in place, or to --out).
    Sign {
        file: PathBuf,
        /// The private key (PEM, from `agent plugins keygen` or `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
        /// Write the signed component here instead of replacing FILE.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// Folder of plugin .wasm files (overrides `[agent] plugins`).
    #[arg(long, global = true)]
    plugins: Option<PathBuf>,
    /// Configuration file (agent.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data folder: database, compile cache (overrides `[agent] data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API (overrides `[agent] listen`).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
}

impl RunArgs {
    fn into_options(self) -> commands::RunOptions {
        commands::RunOptions {
            config: self.config,
            plugins: self.plugins,
            data_dir: self.data_dir,
            listen: self.listen,
        }
    }
}

fn main() {
    // Errors inside the plugin runtime (anyhow's, wasmtime's) would capture a backtrace each
    // under RUST_BACKTRACE=1, and symbolize it when a plugin asks for an error's text: CPU a
    // plugin could make the agent spend at will. Panics keep RUST_BACKTRACE's backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    agent::footprint::at_start();
    // The daemon's compiler child (see plugins::compile): before anything else starts.
    if std::env::args_os().nth(1).is_some_and(|a| a == agent::plugins::compile::CHILD_ARG) {
        agent::plugins::compile::child_main();
    }
    let cli = Cli::parse();
    // Only `run` logs at info; the one-shot commands print their answer on stdout.
    let quiet = !matches!(cli.command, Some(Command::Run(_)) | None);
    if quiet {
        commands::exit_quietly_on_closed_pipe();
    }
    commands::init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        None => commands::run(cli.run.into_options()),
        Some(Command::Run(args)) => commands::run(args.into_options()),
        Some(Command::Plugins(PluginsCommand::Inspect { file, json, run })) => {
            commands::inspect(run.into_options(), &file, json)
        }
        Some(Command::Plugins(PluginsCommand::New { name, kind, lang, dir, sdk })) => {
            commands::new_plugin(&name, kind, lang, &dir, sdk.as_deref())
        }
        Some(Command::Plugins(PluginsCommand::List { run, json })) => {
            commands::list(run.into_options(), json)
        }
        Some(Command::Plugins(PluginsCommand::Keygen { key })) => commands::keygen(&key),
        Some(Command::Plugins(PluginsCommand::Push { file, reference, registry, run })) => {
            commands::publish::push(run.into_options(), &file, &reference, registry.access())
        }
        Some(Command::Plugins(PluginsCommand::Install { reference, print, registry, run })) => {
            let binding =
                if print { commands::publish::Binding::Print } else { commands::publish::Binding::Record };
            commands::publish::install(run.into_options(), &reference, registry.access(), binding, None)
        }
        Some(Command::Plugins(PluginsCommand::Outdated { registry, run })) => {
            commands::publish::outdated(run.into_options(), registry.access())
        }
        Some(Command::Plugins(PluginsCommand::Upgrade { name, registry, run })) => {
            commands::publish::upgrade(run.into_options(), &name, registry.access())
        }
        Some(Command::Plugins(PluginsCommand::Sign { file, key, out })) => {
            commands::sign(&file, &key, out.as_deref())
        }
        Some(Command::Metrics(MetricsCommand::List { run, format })) => {
            commands::metrics_list(run.into_options(), format)
        }
        Some(Command::Metrics(MetricsCommand::Query {
            name,
            labels,
            since,
            from,
            to,
            step,
            format,
            run,
        })) => {
            let query = commands::MetricsQuery { name, labels, since, from, to, step, format };
            commands::metrics_query(run.into_options(), query)
        }
        Some(Command::Ps { json, run }) => commands::ps(run.into_options(), json),
        Some(Command::Status { json, run }) => commands::status(run.into_options(), json),
        Some(Command::Simulate { args, run }) => commands::simulate(run.into_options(), args),
        Some(Command::Tune { args, run }) => commands::tune(run.into_options(), args),
        Some(Command::Storage(StorageCommand::Grow { mount_point, size, wait, json })) => {
            let request = agent::storage::grow::Request { mount_point, device_bytes: size, wait };
            commands::storage_grow(request, json)
        }
        Some(Command::Decisions { group, since, all, format, run }) => {
            commands::decisions(run.into_options(), group, since, all, format)
        }
        Some(Command::Restart { name, run }) => {
            commands::control(run.into_options(), ProcessAction::Restart(name))
        }
        Some(Command::Stop { name, run }) => commands::control(run.into_options(), ProcessAction::Stop(name)),
        Some(Command::Start { name, run }) => {
            commands::control(run.into_options(), ProcessAction::Start(name))
        }
        Some(Command::Scale { name, replicas, run }) => {
            commands::control(run.into_options(), ProcessAction::Scale(name, replicas))
        }
        Some(Command::Logs { name, replica, follow, lines, run }) => {
            commands::logs(run.into_options(), commands::LogsArgs { name, replica, follow, lines })
        }
        Some(Command::Reload { run }) => commands::reload(run.into_options()),
        Some(Command::CheckConfig { run }) => commands::check_config(run.into_options()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "agent", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Some(Command::Man) => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|_| Exit::Success)
            .map_err(Into::into),
    };
    std::process::exit(match result {
        Ok(Exit::Success) => 0,
        Ok(Exit::SomeFailed) => 1,
        Err(e) => {
            eprintln!("error: {}", commands::error_line(&e));
            if e.downcast_ref::<agent::config::ConfigError>().is_some() {
                2
            } else {
                1
            }
        }
    });
}
