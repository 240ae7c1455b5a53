//! `imgsearch`: the one user-facing binary. Parses the command line (`cli`), sets up logging, and
//! hands each subcommand to its command module over the library crates. No business logic lives here.

mod cli;
mod commands;
mod model_commands;
mod role_commands;
mod telemetry;

use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, ModelCommand};
use imgsearch::config::Config;

/// jemalloc, as Qdrant's server uses. glibc's malloc keeps an arena per busy thread (tokio's
/// blocking pool, rayon, the vector engine's pools), and what the engine frees while it merges and
/// indexes segments stayed there: `index` of 50,000 images peaked at 165 MB of anonymous memory
/// with glibc, 121 MB with jemalloc as configured below (bench/scale.sh measures it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides them):
/// freed pages go back to the system within a second, from a background thread, rather than the
/// default ten seconds, so a peak is not the sum of what each phase of `index` freed. Linux with
/// glibc only: jemalloc has no background thread on macOS or musl, and would not start there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a static, immutable C string
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the distributed roles set up logging and tracing from their config, inside their runtime
    let is_role = matches!(&cli.command, Command::Coordinator(_) | Command::Embedder(_) | Command::Writer(_)) || matches!(&cli.command, Command::Serve(a) if a.config.is_some());
    if !is_role {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("IMGSEARCH_LOG").unwrap_or_else(|_| "warn,qdrant_edge=error".into()))
            .with_writer(std::io::stderr)
            .init();
    }
    // test hooks, read from FAILPOINTS; nothing unless built with the `failpoints` feature
    let _failpoints = fail::FailScenario::setup();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one line: what failed, then why, as the chain of contexts
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a distributed role on its config (read once), with logging and tracing set up from it
/// (`telemetry.log`, `telemetry.otlp_endpoint`); the spans still buffered are sent before it returns.
fn run_role<F: std::future::Future<Output = Result<()>>>(path: Option<&Path>, service: &str, role: impl FnOnce(Config) -> F) -> Result<()> {
    let config = Config::from_file_and_env(path)?;
    runtime()?.block_on(async {
        let telemetry = config.telemetry.clone();
        let provider = telemetry::init(&telemetry.log, telemetry.otlp_endpoint.as_deref(), &format!("imgsearch-{service}"))?;
        tracing::debug!(config = %config.redacted().to_toml(), "configuration");
        let result = role(config).await;
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        result
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed(args) => model_commands::embed(args),
        Command::Preprocess(args) => model_commands::preprocess(args),
        Command::Model(ModelCommand::Fetch { name, model_cache, hub, owner }) => model_commands::fetch(&name, model_cache, hub, owner),
        Command::Index(args) => runtime()?.block_on(commands::index(args)),
        Command::Search(args) => runtime()?.block_on(commands::search(args)),
        Command::Status(args) => runtime()?.block_on(commands::status(args)),
        Command::Serve(args) if args.config.is_some() => run_role(args.config.clone().as_deref(), "api", |config| commands::serve_distributed(args, config)),
        Command::Serve(args) => runtime()?.block_on(commands::serve(args)),
        Command::Coordinator(args) => run_role(args.role.config.clone().as_deref(), "coordinator", |config| role_commands::coordinator(args, config)),
        Command::Embedder(args) => run_role(args.config.as_deref(), "embedder", role_commands::embedder),
        Command::Writer(args) => run_role(args.config.as_deref(), "writer", role_commands::writer),
        Command::Vectors(command) => runtime()?.block_on(commands::vectors(command)),
        Command::Config(args) => {
            print!("{}", Config::from_file_and_env(args.config.as_deref())?.redacted().to_toml());
            Ok(())
        }
        Command::Model(ModelCommand::Info { model, model_cache }) => model_commands::info(&model, model_cache),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}
