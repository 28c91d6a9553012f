//! The `agent` command line: parse arguments, call the library, print the error, exit.
//! Exit codes: 0 success; 1 the command failed (or, for `plugins list`, a file did not load);
//! 2 bad usage or configuration.

use agent::commands::{self, Exit};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "Elastic-scaling host agent with WebAssembly plugins"
)]
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
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Print a plugin's kind, contract version, metadata, config keys and imports.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One line per .wasm file in the folder: name, kind, version, and `ok` or the error.
    List {
        #[command(flatten)]
        run: RunArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Some(Command::Plugins(_)));
    commands::init_logging(if quiet { "warn" } else { "info" });
    let result = match cli.command {
        None => commands::run(cli.run.into_options()),
        Some(Command::Run(args)) => commands::run(args.into_options()),
        Some(Command::Plugins(PluginsCommand::Inspect { file, json })) => {
            commands::inspect(&file, json)
        }
        Some(Command::Plugins(PluginsCommand::List { run, json })) => {
            commands::list(run.into_options(), json)
        }
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
