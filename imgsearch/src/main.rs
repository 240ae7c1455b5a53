//! `imgsearch`: the one user-facing binary. Parses the command line, sets up logging, and hands each
//! subcommand to the library crates. No business logic lives here.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use clip::{
    ClipModel, DEFAULT_MODEL, DeviceRequest, ModelDir, PreprocessConfig, Preprocessor, RuntimeOptions, embedding_checksum,
    fetch::{FetchProgress, FetchSource, fetch_model},
};
use imgsearch::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "imgsearch", version, about = "Index image folders with CLIP and search them by text")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print CLIP embeddings of images or of a text as JSON
    Embed(EmbedArgs),
    /// Write the exact model input tensor of an image as a 1x3xHxW float32 .npy file
    Preprocess(PreprocessArgs),
    /// Manage CLIP models in the model cache
    #[command(subcommand)]
    Model(ModelCommand),
    /// Index image folders: scan, embed every new or changed image, store the vectors (resumable)
    Index(IndexArgs),
    /// Search the indexed images by text
    Search(SearchArgs),
    /// Show what the index holds: assets, vectors, sessions, failures
    Status(StatusArgs),
    /// Serve the REST API (search, sessions, categories, assets, evidence, metrics)
    Serve(ServeArgs),
    /// Distributed: scan folders into a session, publish its jobs to RabbitMQ, keep its progress
    Coordinator(CoordinatorArgs),
    /// Distributed: embed jobs from RabbitMQ and publish the results (run any number)
    Embedder(RoleArgs),
    /// Distributed: write results from RabbitMQ to Qdrant and PostgreSQL (run any number)
    Writer(RoleArgs),
    /// Print the effective configuration of the distributed roles (passwords hidden)
    Config(RoleArgs),
    /// Manage the vectors: delete, clean up orphans, reset, stats, deletion log
    #[command(subcommand)]
    Vectors(VectorsCommand),
}

#[derive(Subcommand)]
enum VectorsCommand {
    /// Delete the vectors of assets, a directory, a session or a category (logged; the assets are
    /// embedded again by the next `index`)
    Delete(VectorsDeleteArgs),
    /// Make soft-deleted vectors searchable again
    Restore {
        /// Asset ids (repeatable)
        #[arg(long = "asset", required = true)]
        assets: Vec<uuid::Uuid>,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
    /// Delete vectors whose asset is gone; queue indexed assets whose vector is missing
    Cleanup {
        /// Only report what would change
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
    /// Delete every vector (needs --confirm "DELETE ALL VECTORS")
    Reset {
        #[arg(long)]
        confirm: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
    /// Embed assets again through the normal pipeline (new jobs, new evidence); their vectors are
    /// replaced, and search keeps answering from the old ones meanwhile
    Reindex(VectorsReindexArgs),
    /// Build a new collection with another model while search answers from the current one, then
    /// point the alias at it (the old collection is kept until `drop-collection`)
    Upgrade {
        /// Build only; leave the alias where it is
        #[arg(long)]
        no_swap: bool,
        #[command(flatten)]
        store: VectorsStoreArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Delete a collection the alias does not point at (after an upgrade)
    DropCollection {
        name: String,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
    /// Assets and indexed assets per directory
    Stats {
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
    /// The deletion log, newest first
    Logs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
}

impl VectorsCommand {
    /// Which stores the command works on, and how it prints.
    fn store(&self) -> &VectorsStoreArgs {
        match self {
            VectorsCommand::Delete(a) => &a.store,
            VectorsCommand::Reindex(a) => &a.store,
            VectorsCommand::Restore { store, .. }
            | VectorsCommand::Cleanup { store, .. }
            | VectorsCommand::Reset { store, .. }
            | VectorsCommand::Upgrade { store, .. }
            | VectorsCommand::DropCollection { store, .. }
            | VectorsCommand::Stats { store }
            | VectorsCommand::Logs { store, .. } => store,
        }
    }
}

#[derive(Args)]
struct VectorsDeleteArgs {
    /// Asset ids (repeatable)
    #[arg(long = "asset", group = "target")]
    assets: Vec<uuid::Uuid>,
    /// Every asset under this directory
    #[arg(long, group = "target")]
    dir: Option<PathBuf>,
    /// The assets of this session
    #[arg(long, group = "target")]
    session: Option<uuid::Uuid>,
    /// The assets of this category (by name)
    #[arg(long, group = "target")]
    category: Option<String>,
    /// Only hide the assets' vectors from searches (`vectors restore` brings them back)
    #[arg(long, requires = "assets")]
    soft: bool,
    /// Confirm a directory, session or category delete
    #[arg(long)]
    yes: bool,
    /// Why, for the deletion log
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    store: VectorsStoreArgs,
}

#[derive(Args)]
struct VectorsReindexArgs {
    /// Asset ids (repeatable)
    #[arg(long = "asset", group = "target")]
    assets: Vec<uuid::Uuid>,
    /// Every asset under this directory
    #[arg(long, group = "target")]
    dir: Option<PathBuf>,
    /// Every asset
    #[arg(long, group = "target")]
    all: bool,
    #[command(flatten)]
    store: VectorsStoreArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct VectorsStoreArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Manage the distributed stores (PostgreSQL and Qdrant) of this config file instead of the data dir
    #[arg(long, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct RoleArgs {
    /// The config file (TOML; see deploy/imgsearch.toml); IMGSEARCH__SECTION__KEY variables override it
    #[arg(long, env = "IMGSEARCH_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CoordinatorArgs {
    /// Folders to index (walked recursively)
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Put the new images in this category (created if it does not exist)
    #[arg(long)]
    category: Option<String>,
    /// The session's name (default: from the folders)
    #[arg(long)]
    name: Option<String>,
    /// Return once the jobs are published instead of waiting for the session to complete
    #[arg(long)]
    no_wait: bool,
    /// Try again the unchanged files whose last attempt failed permanently
    #[arg(long)]
    retry_failed: bool,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    role: RoleArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", env = "IMGSEARCH_ADDR")]
    addr: std::net::SocketAddr,
    /// Directories sessions may index (repeatable); default: the home directory
    #[arg(long = "allow-root")]
    allow_roots: Vec<PathBuf>,
    /// Keep the vectors in this Qdrant server (gRPC, e.g. http://127.0.0.1:6334) instead of the data dir
    #[arg(long, env = "IMGSEARCH_QDRANT_URL")]
    qdrant_url: Option<String>,
    /// Serve the distributed wiring from this config file (PostgreSQL, Qdrant, RabbitMQ; see
    /// deploy/imgsearch.toml): started sessions go to the embedder and writer processes
    #[arg(long, conflicts_with_all = ["qdrant_url", "data_dir"])]
    config: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct DataArgs {
    /// The data directory (catalog and vectors); default: the platform data dir, e.g. ~/.local/share/imgsearch
    #[arg(long, env = "IMGSEARCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct IndexArgs {
    /// Folders to index (walked recursively)
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Put the new images in this category (created if it does not exist)
    #[arg(long)]
    category: Option<String>,
    /// Images per inference batch
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Decode large JPEGs at reduced size (faster, slightly different from the reference)
    #[arg(long)]
    fast_jpeg: bool,
    /// Decode the next batch while the model runs: auto (when the model runs on a GPU; on CPU both
    /// halves want the same cores), on, off
    #[arg(long, default_value = "auto", hide = true)]
    overlap_decode: Overlap,
    /// Try again the unchanged files whose last attempt failed permanently (corrupt, too large...);
    /// without it they are skipped, since the same bytes fail the same way
    #[arg(long)]
    retry_failed: bool,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Overlap {
    Auto,
    On,
    Off,
}

#[derive(Args)]
struct SearchArgs {
    /// What to look for, in words
    query: String,
    /// How many results (1-100)
    #[arg(long, default_value_t = imgsearch::search::DEFAULT_LIMIT)]
    limit: usize,
    /// Skip this many results (the next page)
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Only images created at or after this time (RFC 3339, or a date: 2024-01-31)
    #[arg(long)]
    from: Option<String>,
    /// Only images created at or before this time (a date includes that whole day, UTC)
    #[arg(long)]
    to: Option<String>,
    /// Only images of this category
    #[arg(long)]
    category: Option<String>,
    /// Print the results as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct ModelArgs {
    /// A model directory in the Immich layout, or the name of one in the model cache
    #[arg(long, env = "IMGSEARCH_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// The model cache (default: the platform cache dir, e.g. ~/.cache/imgsearch/models)
    #[arg(long, env = "IMGSEARCH_MODEL_CACHE")]
    model_cache: Option<PathBuf>,
    /// Where inference runs: cpu, or cuda (falls back to cpu with a warning)
    #[arg(long, default_value = "cpu")]
    device: DeviceRequest,
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then next to the binary, then ~/.local/share/imgsearch/lib)
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

#[derive(Args)]
struct EmbedArgs {
    /// Image files to embed
    images: Vec<PathBuf>,
    /// Embed this text instead of images
    #[arg(long, conflicts_with = "images")]
    text: Option<String>,
    /// Decode large JPEGs at reduced size (faster, slightly different from the reference)
    #[arg(long)]
    fast_jpeg: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct PreprocessArgs {
    image: PathBuf,
    /// Output .npy file
    #[arg(long)]
    out: PathBuf,
    /// Take the preprocessing of this model directory (default: OpenCLIP ViT-B-32's)
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    fast_jpeg: bool,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a model (default ViT-B-32__openai) into the model cache; resumes and verifies checksums
    Fetch {
        #[arg(default_value = DEFAULT_MODEL)]
        name: String,
        #[arg(long, env = "IMGSEARCH_MODEL_CACHE")]
        model_cache: Option<PathBuf>,
        /// The hub to download from (a Hugging Face compatible API)
        #[arg(long, env = "IMGSEARCH_MODEL_HUB", default_value = "https://huggingface.co")]
        hub: String,
        /// The repository owner on the hub
        #[arg(long, default_value = "immich-app")]
        owner: String,
    },
    /// Check a model directory and print what it holds
    Info {
        #[arg(default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long, env = "IMGSEARCH_MODEL_CACHE")]
        model_cache: Option<PathBuf>,
    },
}

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
        Command::Embed(args) => embed(args),
        Command::Preprocess(args) => preprocess(args),
        Command::Model(ModelCommand::Fetch { name, model_cache, hub, owner }) => {
            let cache = model_cache_dir(model_cache)?;
            let source = FetchSource { base_url: hub, owner, ..Default::default() };
            let progress = BarProgress::new();
            let (dir, report) = fetch_model(&name, &cache, &source, &progress)?;
            progress.bar.finish_and_clear();
            ModelDir::open(&dir).context("the downloaded model does not open")?;
            println!(
                "{name} is in {} ({} files downloaded, {} already there, {} bytes)",
                dir.display(),
                report.downloaded.len(),
                report.already_present.len(),
                report.bytes
            );
            Ok(())
        }
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
        Command::Model(ModelCommand::Info { model, model_cache }) => {
            let dir = resolve_model(&model, model_cache)?;
            let info = serde_json::json!({
                "name": dir.name,
                "path": dir.root(),
                "version": dir.version()?,
                "embedDim": dir.config.embed_dim,
                "imageSize": dir.preprocess.size.hw(),
                "contextLength": dir.config.text_cfg.context_length,
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
    }
}

fn model_cache_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => Ok(dirs::cache_dir().context("no cache directory on this platform; pass --model-cache DIR")?.join("imgsearch/models")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// `--model` is a directory when it names one, else a model name in the cache. A model missing from
/// the cache is fetched first (from `IMGSEARCH_MODEL_HUB`, default Hugging Face), with a progress bar.
fn resolve_model(model: &str, cache: Option<PathBuf>) -> Result<ModelDir> {
    let as_path = Path::new(model);
    let dir = if as_path.is_dir() || model.contains('/') { as_path.to_owned() } else { model_cache_dir(cache.clone())?.join(model) };
    if !dir.exists() && !model.contains('/') {
        let cache = model_cache_dir(cache)?;
        let hub = std::env::var("IMGSEARCH_MODEL_HUB").unwrap_or_else(|_| "https://huggingface.co".into());
        eprintln!("model {model} is not in the model cache; fetching it from {hub}");
        let source = FetchSource { base_url: hub.clone(), owner: "immich-app".into(), ..Default::default() };
        let progress = BarProgress::new();
        let fetched = fetch_model(model, &cache, &source, &progress);
        progress.bar.finish_and_clear();
        if let Err(e) = fetched {
            bail!(
                "model {model} is not in the model cache ({}) and could not be downloaded from {hub} ({e}); run `imgsearch model fetch {model}` where the hub is reachable and copy the directory there, or pass --model DIR",
                dir.display()
            );
        }
    }
    Ok(ModelDir::open(dir)?)
}

mod commands;
mod role_commands;
mod telemetry;


fn load_model(args: &ModelArgs) -> Result<ClipModel> {
    let dir = resolve_model(&args.model, args.model_cache.clone())?;
    let options = RuntimeOptions { device: args.device, library: args.ort_lib.clone(), ..Default::default() };
    Ok(ClipModel::load(&dir, &options)?)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbeddingOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    model: &'a str,
    model_version: &'a str,
    device: &'a str,
    dim: usize,
    checksum: String,
    embedding: &'a [f32],
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a clip::ImageInfo>,
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.text.is_none() && args.images.is_empty() {
        bail!("nothing to embed; pass image files, or --text \"...\"");
    }
    let model = load_model(&args.model)?;
    let mut out = std::io::stdout().lock();
    let record = |device: &str, v: &[f32], path: Option<&Path>, text: Option<&str>, image: Option<&clip::ImageInfo>| {
        let rec = EmbeddingOut {
            path,
            text,
            model: &model.name,
            model_version: &model.version,
            device,
            dim: v.len(),
            checksum: embedding_checksum(v),
            embedding: v,
            image,
        };
        serde_json::to_string(&rec)
    };
    if let Some(text) = &args.text {
        let v = model.embed_texts(&[text])?.row(0).to_vec();
        writeln!(out, "{}", record(&model.text_device(), &v, None, Some(text), None)?)?;
        return Ok(());
    }
    let pre = model.preprocessor().clone().with_fast_jpeg(args.fast_jpeg);
    let mut failed = 0;
    let device = model.image_device();
    // one JSON object per line, in the order given; a bad file is reported and the rest go on
    for path in &args.images {
        let prepared = match pre.prepare_file(path) {
            Ok(p) => p,
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
                continue;
            }
        };
        let v = model.embed_images(std::slice::from_ref(&prepared))?.row(0).to_vec();
        writeln!(out, "{}", record(&device, &v, Some(path), None, Some(&prepared.info))?)?;
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be embedded", args.images.len());
    }
    Ok(())
}

fn preprocess(args: PreprocessArgs) -> Result<()> {
    let cfg = match &args.model {
        Some(dir) => ModelDir::open(dir)?.preprocess,
        None => PreprocessConfig::openclip_vit_b32(),
    };
    let pre = Preprocessor::new(cfg).with_fast_jpeg(args.fast_jpeg);
    let prepared = pre.prepare_file(&args.image).with_context(|| format!("cannot preprocess {}", args.image.display()))?;
    let (h, w) = pre.output_hw();
    let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    clip::npy::write_f32(std::io::BufWriter::new(file), &[1, 3, h as usize, w as usize], &prepared.pixels)?;
    eprintln!("wrote {} (1x3x{h}x{w} float32)", args.out.display());
    Ok(())
}

/// An indicatif bar per file, with bytes, rate and ETA.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        BarProgress { bar }
    }
}

impl FetchProgress for BarProgress {
    fn file_started(&self, file: &str, size: u64, resumed_at: u64) {
        self.bar.reset();
        self.bar.set_length(size);
        self.bar.set_position(resumed_at);
        self.bar.set_message(if resumed_at > 0 { format!("{file} (resumed)") } else { file.to_owned() });
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn file_done(&self, file: &str) {
        self.bar.println(format!("  {file} verified"));
    }
}
