//! The distributed wiring: each stage as a process of its own (`imgsearch coordinator`, `embedder`,
//! `writer`) over RabbitMQ, the catalog in PostgreSQL and the vectors in a Qdrant server. Each role
//! builds its stores from the typed `Config`, serves `/metrics` on its own address, and runs until
//! its shutdown token fires (SIGTERM or Ctrl-C in the binary). The stages are the same library code
//! the embedded wiring runs.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{Router, http::header, response::IntoResponse, routing::get};
use catalog::{Catalog, Session};
use clip::ClipModel;
use embedder::Embedder;
use tokio_util::sync::CancellationToken;
use vectors::{DEFAULT_COLLECTION, VectorStore};
use writer::Writer;

use crate::config::{Config, redact_url};

/// Serves the process's Prometheus registry at `/metrics` (and `/health`) until `shutdown`;
/// returns the address it listens on (port 0 in the config picks a free one).
pub async fn serve_metrics(addr: SocketAddr, shutdown: CancellationToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(render_metrics)).route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    });
    Ok(local)
}

async fn render_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::api::metrics::render_default())
}

/// The catalog of the distributed wiring (PostgreSQL, in the configured schema).
pub async fn open_catalog(config: &Config) -> Result<Catalog> {
    Catalog::connect_postgres(&config.catalog.url, config.catalog.schema.as_deref())
        .await
        .with_context(|| format!("cannot open the catalog at {}", redact_url(&config.catalog.url)))
}

pub fn open_vectors(config: &Config) -> Result<Arc<VectorStore>> {
    Ok(Arc::new(VectorStore::server(&config.vectors.qdrant_url)?))
}

/// What `imgsearch coordinator` is asked to do.
#[derive(Debug, Clone)]
pub struct CoordinatorRun {
    pub roots: Vec<PathBuf>,
    pub category: Option<String>,
    pub name: Option<String>,
    /// Keep the session's progress until it completes (else return once the jobs are published).
    pub wait: bool,
    /// Publish unchanged files that failed permanently again.
    pub retry_failed: bool,
    /// The model the embedders run: its version and dimension make the collection.
    pub model_version: String,
    pub model_dim: usize,
}

#[derive(Debug)]
pub struct CoordinatorReport {
    pub session: Session,
    pub resumed: bool,
    pub jobs_created: u64,
    pub published: u64,
    pub counts: coordinator::JobCounts,
    pub scan: ingest::ScanReport,
    /// The scan, with the jobs recorded.
    pub scan_seconds: f64,
    /// Publishing the jobs (confirmed by the broker, marked queued).
    pub publish_seconds: f64,
    /// From the first publish to the end of the watch (the scan not included).
    pub pipeline_seconds: f64,
    /// Jobs finished (completed or failed) during this run.
    pub finished_this_run: i64,
}

/// Scans the roots into a new or resumed session, publishes the jobs not done, then (with `wait`)
/// keeps the session's progress until every job is finished. `on_progress` sees each count.
pub async fn run_coordinator(config: &Config, run: CoordinatorRun, shutdown: CancellationToken, on_progress: impl FnMut(&coordinator::JobCounts)) -> Result<CoordinatorReport> {
    let catalog = open_catalog(config).await?;
    let vectors = open_vectors(config)?;
    crate::app::collection_for(&vectors, &run.model_version, run.model_dim).await?;
    let category_id = crate::app::category_id(&catalog, run.category.as_deref(), true).await?;
    let scanning = std::time::Instant::now();
    let prepared = coordinator::prepare(&catalog, &run.roots, category_id, run.name.clone(), run.retry_failed).await?;
    let scan_seconds = scanning.elapsed().as_secs_f64();
    crate::manage::forget_missing(&catalog, &vectors, vectors::DEFAULT_COLLECTION, &prepared.scan.missing).await?;
    let session = prepared.session.clone();
    let before = coordinator::job_counts(&catalog, session.id).await?;
    let started = std::time::Instant::now();
    let published = coordinator::publish_pending_retrying(&catalog, &config.broker.broker_config(), &session, &shutdown).await?.unwrap_or(0);
    let publish_seconds = started.elapsed().as_secs_f64();
    tracing::info!(session = %session.id, published, "jobs published");
    let session = if run.wait {
        let stranded = coordinator::Stranded { broker: config.broker.broker_config(), stall: Duration::from_secs(config.coordinator.republish_stranded_after_s) };
        coordinator::watch(&catalog, session.id, Duration::from_millis(config.coordinator.progress_interval_ms), &shutdown, Some(&stranded), on_progress).await?
    } else {
        catalog.get_session(session.id).await?
    };
    let pipeline_seconds = started.elapsed().as_secs_f64();
    let counts = coordinator::job_counts(&catalog, session.id).await?;
    let finished_this_run = (counts.completed + counts.failed) - (before.completed + before.failed);
    catalog.close().await;
    Ok(CoordinatorReport {
        session,
        resumed: prepared.resumed,
        jobs_created: prepared.jobs_created,
        published,
        counts,
        scan: prepared.scan,
        scan_seconds,
        publish_seconds,
        pipeline_seconds,
        finished_this_run,
    })
}

/// Consumes jobs until `shutdown`, embedding them with `model`.
pub async fn run_embedder(config: &Config, model: Arc<ClipModel>, shutdown: CancellationToken) -> Result<embedder::worker::WorkerStats> {
    let on_gpu = model.image_device() != "cpu";
    let overlap = match config.embedder.overlap_decode.as_str() {
        "on" => true,
        "off" => false,
        _ => on_gpu,
    };
    let embedder = Arc::new(Embedder::new(model, config.embedder.decode_threads, config.embedder.fast_jpeg));
    let options = embedder::worker::WorkerOptions { batch_size: config.embedder.batch_size, max_wait: config.embedder.max_wait(), overlap_decode: overlap, ..Default::default() };
    Ok(embedder::worker::run(&config.broker.broker_config(), embedder, options, shutdown).await?)
}

/// Consumes results until `shutdown`, writing them to the Qdrant server and the catalog.
pub async fn run_writer(config: &Config, shutdown: CancellationToken) -> Result<writer::worker::WorkerStats> {
    let catalog = open_catalog(config).await?;
    let vectors = open_vectors(config)?;
    let writer = Arc::new(Writer { catalog: catalog.clone(), vectors, collection: DEFAULT_COLLECTION.to_owned() });
    let options = writer::worker::WorkerOptions { batch_size: config.writer.batch_size, max_wait: config.writer.max_wait(), ..Default::default() };
    let stats = writer::worker::run(&config.broker.broker_config(), writer, options, shutdown).await?;
    catalog.close().await;
    Ok(stats)
}
