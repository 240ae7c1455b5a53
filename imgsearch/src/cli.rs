//! The command line: every subcommand and argument, with its help text. Parsing only; the work is
//! in `commands`, `model_commands` and `role_commands`, and below them in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clip::{DEFAULT_MODEL, DeviceRequest};

/// The distributed roles, listed apart in `--help` (clap has no subcommand groups: they are hidden
/// from the main list and named here).
const DISTRIBUTED_HELP: &str = "\
Distributed (RabbitMQ, PostgreSQL, a Qdrant server; every role reads --config FILE):
  coordinator  Scan folders into a session, publish its jobs to RabbitMQ, keep its progress
  embedder     Embed jobs from RabbitMQ and publish the results (run any number)
  writer       Write results from RabbitMQ to Qdrant and PostgreSQL (run any number)
  config       Print the effective configuration of the distributed roles (passwords hidden)
  serve --config FILE serves the API of the distributed wiring.";

#[derive(Parser)]
#[command(name = "imgsearch", version, about = "Index image folders with CLIP and search them by text", after_help = DISTRIBUTED_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    #[command(hide = true)]
    Coordinator(CoordinatorArgs),
    /// Distributed: embed jobs from RabbitMQ and publish the results (run any number)
    #[command(hide = true)]
    Embedder(RoleArgs),
    /// Distributed: write results from RabbitMQ to Qdrant and PostgreSQL (run any number)
    #[command(hide = true)]
    Writer(RoleArgs),
    /// Distributed: print the effective configuration of the roles (passwords hidden)
    #[command(hide = true)]
    Config(RoleArgs),
    /// Manage the vectors: delete, clean up orphans, reset, stats, deletion log
    #[command(subcommand)]
    Vectors(VectorsCommand),
}

#[derive(Subcommand)]
pub(crate) enum VectorsCommand {
    /// Delete the vectors of assets, a directory, a session or a category (logged; the assets are
    /// embedded again by the next `index`)
    Delete(VectorsDeleteArgs),
    /// Make soft-deleted vectors searchable again
    Restore {
        /// Asset ids (repeatable)
        #[arg(long = "asset", required = true)]
        assets: Vec<i64>,
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
    /// Delete every vector (the collection stays; needs --yes)
    Reset {
        /// Confirm: every vector is deleted, and the next `index` embeds every asset again
        #[arg(long)]
        yes: bool,
        /// Why, for the deletion log
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
        /// The collection, e.g. image_assets_v1 (`vectors stats` and `status` name the live one)
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
        /// How many entries, newest first
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        store: VectorsStoreArgs,
    },
}

impl VectorsCommand {
    /// Which stores the command works on, and how it prints.
    pub(crate) fn store(&self) -> &VectorsStoreArgs {
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
pub(crate) struct VectorsDeleteArgs {
    /// Asset ids (repeatable)
    #[arg(long = "asset", group = "target")]
    pub(crate) assets: Vec<i64>,
    /// Every asset under this directory
    #[arg(long, group = "target")]
    pub(crate) dir: Option<PathBuf>,
    /// The assets of this session
    #[arg(long, group = "target")]
    pub(crate) session: Option<i64>,
    /// The assets of this category (by name)
    #[arg(long, group = "target")]
    pub(crate) category: Option<String>,
    /// Only hide the assets' vectors from searches (`vectors restore` brings them back)
    #[arg(long, requires = "assets")]
    pub(crate) soft: bool,
    /// Confirm a directory, session or category delete
    #[arg(long)]
    pub(crate) yes: bool,
    /// Why, for the deletion log
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) store: VectorsStoreArgs,
}

#[derive(Args)]
pub(crate) struct VectorsReindexArgs {
    /// Asset ids (repeatable)
    #[arg(long = "asset", group = "target")]
    pub(crate) assets: Vec<i64>,
    /// Every asset under this directory
    #[arg(long, group = "target")]
    pub(crate) dir: Option<PathBuf>,
    /// Every asset
    #[arg(long, group = "target")]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) store: VectorsStoreArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Args)]
pub(crate) struct VectorsStoreArgs {
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Manage the distributed stores (PostgreSQL and Qdrant) of this config file instead of the data dir
    #[arg(long, conflicts_with = "data_dir")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) data: DataArgs,
}

#[derive(Args)]
pub(crate) struct RoleArgs {
    /// The config file (TOML; see deploy/imgsearch.toml); IMGSEARCH__SECTION__KEY variables override it
    #[arg(long, env = "IMGSEARCH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CoordinatorArgs {
    /// Folders to index (walked recursively)
    #[arg(required = true)]
    pub(crate) dirs: Vec<PathBuf>,
    /// Put the new images in this category (created if it does not exist)
    #[arg(long)]
    pub(crate) category: Option<String>,
    /// The session's name (default: from the folders)
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Return once the jobs are published instead of waiting for the session to complete
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Try again the unchanged files whose last attempt failed permanently
    #[arg(long)]
    pub(crate) retry_failed: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) role: RoleArgs,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", env = "IMGSEARCH_ADDR")]
    pub(crate) addr: std::net::SocketAddr,
    /// Directories sessions may index (repeatable); default: the home directory
    #[arg(long = "allow-root")]
    pub(crate) allow_roots: Vec<PathBuf>,
    /// An origin whose pages may call the API from a browser, e.g. the web UI's
    /// http://localhost:3000 (repeatable; none by default)
    #[arg(long = "cors-origin", env = "IMGSEARCH_CORS_ORIGINS", value_delimiter = ',')]
    pub(crate) cors_origins: Vec<String>,
    #[command(flatten)]
    pub(crate) access: AccessArgs,
    /// Keep the vectors in this Qdrant server (gRPC, e.g. http://127.0.0.1:6334) instead of the data dir
    #[arg(long, env = "IMGSEARCH_QDRANT_URL")]
    pub(crate) qdrant_url: Option<String>,
    /// Serve the distributed wiring from this config file (PostgreSQL, Qdrant, RabbitMQ; see
    /// deploy/imgsearch.toml): started sessions go to the embedder and writer processes
    #[arg(long, conflicts_with_all = ["qdrant_url", "data_dir"])]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

/// Who may call the API (see `imgsearch::api::guard`).
#[derive(Args)]
pub(crate) struct AccessArgs {
    /// A file holding the token that requests which change something must carry
    /// (`Authorization: Bearer <token>` or `X-API-Key`); required to listen beyond loopback
    #[arg(long, env = "IMGSEARCH_AUTH_TOKEN_FILE")]
    pub(crate) auth_token_file: Option<PathBuf>,
    /// The token itself, from the environment (prefer the file: a value on a command line is
    /// visible to every user of the machine)
    #[arg(long, env = "IMGSEARCH_AUTH_TOKEN", hide_env_values = true, conflicts_with = "auth_token_file")]
    pub(crate) auth_token: Option<String>,
    /// Which requests need the token: mutations (the default) or all (every route but /health)
    #[arg(long, value_enum, default_value = "mutations")]
    pub(crate) auth: imgsearch::api::guard::AuthScope,
    /// A name this server answers to in the Host header (repeatable); default: the loopback names
    /// on a loopback address, any name elsewhere
    #[arg(long = "allowed-host", env = "IMGSEARCH_ALLOWED_HOSTS", value_delimiter = ',')]
    pub(crate) allowed_hosts: Vec<String>,
    /// Listen beyond loopback without a token: anyone who reaches the port may delete the index
    #[arg(long)]
    pub(crate) insecure_no_auth: bool,
    /// A directory whose models `POST /api/v1/vectors/upgrade` may load (repeatable), besides the
    /// model cache
    #[arg(long = "model-root", env = "IMGSEARCH_MODEL_ROOTS", value_delimiter = ',')]
    pub(crate) model_roots: Vec<PathBuf>,
    /// The largest image upload for /search/image, in MiB
    #[arg(long, default_value_t = 32, env = "IMGSEARCH_MAX_UPLOAD_MB")]
    pub(crate) max_upload_mb: usize,
    /// Searches and image requests (thumbnails, full images) served at once; more get 503 with
    /// Retry-After (default: two per core)
    #[arg(long, env = "IMGSEARCH_MAX_HEAVY_REQUESTS")]
    pub(crate) max_heavy_requests: Option<usize>,
    /// Connections served at once; more wait until one closes (each is a file descriptor)
    #[arg(long, default_value_t = 1000, env = "IMGSEARCH_MAX_CONNECTIONS")]
    pub(crate) max_connections: usize,
    /// Close a connection that sends nothing for this many seconds while the server waits for it
    /// (idle keep-alive, headers never finished)
    #[arg(long, default_value_t = 30, env = "IMGSEARCH_IDLE_TIMEOUT_S")]
    pub(crate) idle_timeout_s: u64,
}

#[derive(Args)]
pub(crate) struct DataArgs {
    /// The data directory (catalog and vectors); default: the platform data dir, e.g. ~/.local/share/imgsearch
    #[arg(long, env = "IMGSEARCH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct IndexArgs {
    /// Folders to index (walked recursively)
    #[arg(required = true)]
    pub(crate) dirs: Vec<PathBuf>,
    /// Put the new images in this category (created if it does not exist)
    #[arg(long)]
    pub(crate) category: Option<String>,
    /// Images per inference batch
    #[arg(long, default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// Decode large JPEGs at reduced size (faster, slightly different from the reference)
    #[arg(long)]
    pub(crate) fast_jpeg: bool,
    /// Decode the next batch while the model runs: auto (when the model runs on a GPU; on CPU both
    /// halves want the same cores), on, off
    #[arg(long, default_value = "auto", hide = true)]
    pub(crate) overlap_decode: Overlap,
    /// Try again the unchanged files whose last attempt failed permanently (corrupt, too large...);
    /// without it they are skipped, since the same bytes fail the same way
    #[arg(long)]
    pub(crate) retry_failed: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Overlap {
    Auto,
    On,
    Off,
}

#[derive(Args)]
pub(crate) struct SearchArgs {
    /// What to look for, in words
    pub(crate) query: String,
    /// How many results (1-100)
    #[arg(long, default_value_t = imgsearch::search::DEFAULT_LIMIT)]
    pub(crate) limit: usize,
    /// Skip this many results (the next page)
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: usize,
    /// Only images created at or after this time (RFC 3339, or a date: 2024-01-31)
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// Only images created at or before this time (a date includes that whole day, UTC)
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Only images of this category
    #[arg(long)]
    pub(crate) category: Option<String>,
    /// Print the results as JSON
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) data: DataArgs,
}

#[derive(Args, Clone)]
pub(crate) struct ModelArgs {
    /// A model directory in the Immich layout, or the name of one in the model cache
    #[arg(long, env = "IMGSEARCH_MODEL", default_value = DEFAULT_MODEL)]
    pub(crate) model: String,
    /// The model cache (default: the platform cache dir, e.g. ~/.cache/imgsearch/models)
    #[arg(long, env = "IMGSEARCH_MODEL_CACHE")]
    pub(crate) model_cache: Option<PathBuf>,
    /// Where inference runs: cpu, or cuda (falls back to cpu with a warning)
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceRequest,
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then next to the binary, then ~/.local/share/imgsearch/lib)
    #[arg(long)]
    pub(crate) ort_lib: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct EmbedArgs {
    /// Image files to embed
    pub(crate) images: Vec<PathBuf>,
    /// Embed this text instead of images
    #[arg(long, conflicts_with = "images")]
    pub(crate) text: Option<String>,
    /// Decode large JPEGs at reduced size (faster, slightly different from the reference)
    #[arg(long)]
    pub(crate) fast_jpeg: bool,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Args)]
pub(crate) struct PreprocessArgs {
    /// The image file
    pub(crate) image: PathBuf,
    /// Output .npy file
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Take the preprocessing of this model directory (default: OpenCLIP ViT-B-32's)
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Decode large JPEGs at reduced size (faster, slightly different from the reference)
    #[arg(long)]
    pub(crate) fast_jpeg: bool,
}

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Download a model (default ViT-B-32__openai) into the model cache; resumes and verifies checksums
    Fetch {
        /// The model's name on the hub
        #[arg(default_value = DEFAULT_MODEL)]
        name: String,
        /// The model cache (default: the platform cache dir, e.g. ~/.cache/imgsearch/models)
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
        /// A model directory, or the name of one in the model cache
        #[arg(default_value = DEFAULT_MODEL)]
        model: String,
        /// The model cache (default: the platform cache dir, e.g. ~/.cache/imgsearch/models)
        #[arg(long, env = "IMGSEARCH_MODEL_CACHE")]
        model_cache: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument of every subcommand says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "imgsearch", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn the_distributed_roles_are_listed_apart() {
        let help = Cli::command().render_long_help().to_string();
        let (main, distributed) = help.split_once("Distributed (").expect("a distributed section");
        for role in ["coordinator", "embedder", "writer"] {
            assert!(!main.contains(&format!("  {role} ")), "{role} is in the main list:\n{help}");
            assert!(distributed.contains(&format!("  {role} ")), "{role} is not in the distributed list:\n{help}");
        }
        assert!(main.contains("  index "), "{help}");
    }
}
