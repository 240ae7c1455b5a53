//! The distributed processes' configuration: one TOML file (`--config`) plus environment overrides
//! named `IMGSEARCH__SECTION__KEY` (for example `IMGSEARCH__BROKER__PREFIX=tenant1`), the
//! environment winning. Every section is one struct with `deny_unknown_fields`, so a misspelt key
//! is an error that names it, and every field has the default documented beside it.
//!
//! The loader takes the file's text and the environment as arguments, so it is tested without
//! touching either. Secrets (passwords in the catalog and broker URLs) are never printed:
//! `Config::redacted` is what logs and `imgsearch config` show.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The prefix of environment overrides; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "IMGSEARCH__";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub catalog: CatalogConfig,
    pub vectors: VectorsConfig,
    pub broker: BrokerSection,
    pub model: ModelConfig,
    pub coordinator: CoordinatorConfig,
    pub embedder: EmbedderConfig,
    pub writer: WriterConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// PostgreSQL URL (default `postgres://postgres@127.0.0.1:5432/postgres`). A secret: printed
    /// without its password.
    pub url: String,
    /// Schema to keep the tables in (default: none, the connection's search path).
    pub schema: Option<String>,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig { url: "postgres://postgres@127.0.0.1:5432/postgres".into(), schema: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorsConfig {
    /// Qdrant's gRPC URL (default `http://127.0.0.1:6334`).
    pub qdrant_url: String,
}

impl Default for VectorsConfig {
    fn default() -> Self {
        VectorsConfig { qdrant_url: "http://127.0.0.1:6334".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// AMQP URL (default `amqp://guest:guest@127.0.0.1:5672/%2f`). A secret: printed without its
    /// password.
    pub url: String,
    /// Prefix of every queue and exchange (default `imgsearch`).
    pub prefix: String,
    /// Runs of a job that may start without finishing, or fail for a transient reason, before the
    /// job is failed and dead-lettered (default 5; counted in the catalog, not by RabbitMQ).
    #[serde(alias = "delivery_limit")]
    pub attempt_limit: i64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        let b = broker::BrokerConfig::default();
        BrokerSection { url: b.url, prefix: b.prefix, attempt_limit: b.attempt_limit }
    }
}

impl BrokerSection {
    pub fn broker_config(&self) -> broker::BrokerConfig {
        broker::BrokerConfig { url: self.url.clone(), prefix: self.prefix.clone(), attempt_limit: self.attempt_limit, ..broker::BrokerConfig::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A model directory, or the name of one in the model cache (default `ViT-B-32__openai`).
    pub name: String,
    /// The model cache (default: the platform cache dir, e.g. `~/.cache/imgsearch/models`).
    pub cache: Option<PathBuf>,
    /// Where the image tower runs: `cpu` or `cuda` (default `cpu`; `cuda` falls back to CPU with a
    /// warning when no GPU is usable).
    pub device: String,
    /// Path to `libonnxruntime.so` (default: `ORT_DYLIB_PATH`, then next to the binary).
    pub ort_lib: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { name: clip::DEFAULT_MODEL.into(), cache: None, device: "cpu".into(), ort_lib: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Where `/metrics` is served (default `127.0.0.1:9181`; port 0 picks a free one).
    pub metrics_addr: SocketAddr,
    /// How often the session's progress is counted and printed, in ms (default 1000).
    pub progress_interval_ms: u64,
    /// Jobs still `queued` when no job of the session has finished for this long, and none is
    /// pending, were lost on the way (a worker that died holding them...): they are published
    /// again, in s (default 300).
    pub republish_stranded_after_s: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig { metrics_addr: ([127, 0, 0, 1], 9181).into(), progress_interval_ms: 1000, republish_stranded_after_s: 300 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Where `/metrics` is served (default `127.0.0.1:9182`).
    pub metrics_addr: SocketAddr,
    /// Most images per inference batch (default 32); the prefetch is twice this.
    pub batch_size: usize,
    /// Longest a partial batch waits for more jobs, in ms (default 200).
    pub max_wait_ms: u64,
    /// Decode threads (default 0: one per core).
    pub decode_threads: usize,
    /// Decode the next batch while the model runs: `auto` (on a GPU only), `on`, `off` (default `auto`).
    pub overlap_decode: String,
    /// Decode large JPEGs at reduced size (default false).
    pub fast_jpeg: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig { metrics_addr: ([127, 0, 0, 1], 9182).into(), batch_size: 32, max_wait_ms: 200, decode_threads: 0, overlap_decode: "auto".into(), fast_jpeg: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Where `/metrics` is served (default `127.0.0.1:9183`).
    pub metrics_addr: SocketAddr,
    /// Most results per write batch (default 256); the prefetch is twice this.
    pub batch_size: usize,
    /// Longest a partial batch waits for more results, in ms (default 200).
    pub max_wait_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { metrics_addr: ([127, 0, 0, 1], 9183).into(), batch_size: 256, max_wait_ms: 200 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter, as `RUST_LOG` (default `info,qdrant_edge=error`); `IMGSEARCH_LOG` wins.
    pub log: String,
    /// OTLP endpoint that spans are exported to (default: none, spans are not exported).
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { log: "info,qdrant_edge=error,lapin=warn".into(), otlp_endpoint: None }
    }
}

impl EmbedderConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

impl WriterConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

impl Config {
    /// The defaults, then the file's text (if any), then the `IMGSEARCH__` variables of `env`.
    pub fn load(file: Option<&str>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut tree = toml::Table::try_from(Config::default()).expect("the defaults serialize");
        if let Some(text) = file {
            let from_file: toml::Table = text.parse().context("the config file is not valid TOML")?;
            merge(&mut tree, from_file);
        }
        let mut overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        overrides.sort();
        for (key, value) in overrides {
            let path: Vec<String> = key[ENV_PREFIX.len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut tree, &path, &value).with_context(|| format!("cannot apply {key}"))?;
        }
        let config: Config =
            toml::Value::Table(tree).try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message().trim_end_matches('.'))).context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path` (when given) and this process's environment.
    pub fn from_file_and_env(path: Option<&std::path::Path>) -> Result<Config> {
        let text = match path {
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read the config file {}", p.display()))?),
            None => None,
        };
        Config::load(text.as_deref(), std::env::vars()).with_context(|| match path {
            Some(p) => format!("in {} or the IMGSEARCH__ environment", p.display()),
            None => "in the IMGSEARCH__ environment".to_string(),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.embedder.batch_size == 0 || self.writer.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.broker.attempt_limit < 1 {
            bail!("broker.attempt_limit must be at least 1");
        }
        if !["auto", "on", "off"].contains(&self.embedder.overlap_decode.as_str()) {
            bail!("embedder.overlap_decode must be auto, on or off, not {:?}", self.embedder.overlap_decode);
        }
        if !["cpu", "cuda"].contains(&self.model.device.as_str()) {
            bail!("model.device must be cpu or cuda, not {:?}", self.model.device);
        }
        Ok(())
    }

    /// The configuration with the passwords in its URLs replaced by `***`: what may be printed.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.catalog.url = redact_url(&c.catalog.url);
        c.broker.url = redact_url(&c.broker.url);
        c
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }
}

pub use protocol::redact_url;

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Sets `path` in the tree from an environment value: a string where the default is a string (or
/// unknown), else the value read as TOML (numbers, booleans, arrays).
fn set_path(tree: &mut toml::Table, path: &[String], raw: &str) -> Result<()> {
    let (last, sections) = path.split_last().context("an empty key")?;
    let mut table = tree;
    for section in sections {
        table = match table.entry(section.clone()).or_insert_with(|| toml::Value::Table(Default::default())) {
            toml::Value::Table(t) => t,
            _ => bail!("{section} is a value, not a section"),
        };
    }
    let value = match table.get(last) {
        Some(toml::Value::String(_)) | None => toml::Value::String(raw.to_owned()),
        Some(_) => format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_owned())),
    };
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(file: Option<&str>, vars: &[(&str, &str)], expected: impl Fn(&Config)) {
        let config = Config::load(file, env(vars)).unwrap();
        expected(&config);
    }

    fn check_err(file: Option<&str>, vars: &[(&str, &str)], message: &str) {
        let err = format!("{:#}", Config::load(file, env(vars)).unwrap_err());
        assert!(err.contains(message), "{err:?} should say {message:?}");
    }

    #[test]
    fn defaults_then_file_then_environment() {
        check(None, &[], |c| assert_eq!(c, &Config::default()));
        check(Some("[embedder]\nbatch_size = 8\n"), &[], |c| {
            assert_eq!(c.embedder.batch_size, 8);
            assert_eq!(c.embedder.max_wait_ms, 200, "the rest keeps its default");
        });
        check(Some("[embedder]\nbatch_size = 8\n"), &[("IMGSEARCH__EMBEDDER__BATCH_SIZE", "64"), ("IMGSEARCH__BROKER__PREFIX", "t42"), ("OTHER", "x")], |c| {
            assert_eq!(c.embedder.batch_size, 64, "the environment wins");
            assert_eq!(c.broker.prefix, "t42");
        });
        // a string field keeps a value that looks like a number
        check(None, &[("IMGSEARCH__BROKER__PREFIX", "123")], |c| assert_eq!(c.broker.prefix, "123"));
        check(None, &[("IMGSEARCH__CATALOG__SCHEMA", "tenant_a"), ("IMGSEARCH__TELEMETRY__OTLP_ENDPOINT", "http://otel:4317")], |c| {
            assert_eq!(c.catalog.schema.as_deref(), Some("tenant_a"));
            assert_eq!(c.telemetry.otlp_endpoint.as_deref(), Some("http://otel:4317"));
        });
        check(None, &[("IMGSEARCH__EMBEDDER__FAST_JPEG", "true"), ("IMGSEARCH__WRITER__METRICS_ADDR", "0.0.0.0:9999")], |c| {
            assert!(c.embedder.fast_jpeg);
            assert_eq!(c.writer.metrics_addr, "0.0.0.0:9999".parse().unwrap());
        });
    }

    #[test]
    fn mistakes_are_named() {
        check_err(Some("[embedder]\nbatch_sise = 8\n"), &[], "unknown field `batch_sise`");
        check_err(Some("[embeder]\n"), &[], "unknown field `embeder`");
        check_err(None, &[("IMGSEARCH__WRITER__BATCH_SIZE", "many")], "invalid type");
        check_err(None, &[("IMGSEARCH__EMBEDDER__BATCH_SIZE", "0")], "batch_size must be at least 1");
        check_err(None, &[("IMGSEARCH__EMBEDDER__OVERLAP_DECODE", "sometimes")], "overlap_decode must be auto, on or off");
        check_err(Some("[broker\n"), &[], "not valid TOML");
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Config::load(None, env(&[("IMGSEARCH__BROKER__URL", "amqp://app:hunter2@mq:5672/%2f"), ("IMGSEARCH__CATALOG__URL", "postgres://app:pw@db/imgsearch")])).unwrap();
        let shown = c.redacted().to_toml();
        assert!(!shown.contains("hunter2") && !shown.contains(":pw@"), "{shown}");
        assert!(shown.contains("amqp://app:***@mq:5672/%2f") && shown.contains("postgres://app:***@db/imgsearch"), "{shown}");
        assert_eq!(c.broker.url, "amqp://app:hunter2@mq:5672/%2f", "the real value is kept for connecting");
        assert_eq!(redact_url("http://127.0.0.1:6334"), "http://127.0.0.1:6334");
    }

    #[test]
    fn the_example_file_in_the_repository_loads() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/imgsearch.toml")).unwrap();
        let c = Config::load(Some(&text), Vec::new()).unwrap();
        assert_eq!(c.broker.prefix, "imgsearch");
    }
}
