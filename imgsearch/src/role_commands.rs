//! `coordinator`, `embedder` and `writer`: config, signals and output; the work is in
//! `imgsearch::roles`.

use std::sync::Arc;

use anyhow::{Context, Result};
use clip::{ClipModel, RuntimeOptions, Towers};
use imgsearch::{config::Config, roles};
use tokio_util::sync::CancellationToken;

use crate::{cli::CoordinatorArgs, model_commands::resolve_model};

/// A token cancelled by SIGTERM or Ctrl-C: the roles drain and stop on it.
fn shutdown_on_signals() -> Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("stopping: finishing the batch in hand");
        t.cancel();
    });
    Ok(token)
}

pub(crate) fn load_model(config: &Config, towers: Towers) -> Result<ClipModel> {
    let dir = resolve_model(&config.model.name, config.model.cache.clone())?;
    let device = config.model.device.parse().map_err(anyhow::Error::msg)?;
    let options = RuntimeOptions { device, library: config.model.ort_lib.clone(), ..Default::default() };
    Ok(ClipModel::load_towers(&dir, &options, towers)?)
}

pub async fn coordinator(args: CoordinatorArgs, config: Config) -> Result<()> {
    let shutdown = shutdown_on_signals()?;
    let metrics = roles::serve_metrics(config.coordinator.metrics_addr, shutdown.clone()).await?;
    // the coordinator needs the model's version and size, not the model: no ONNX Runtime here
    let dir = resolve_model(&config.model.name, config.model.cache.clone())?;
    let run = roles::CoordinatorRun {
        roots: args.dirs.clone(),
        category: args.category.clone(),
        name: args.name.clone(),
        wait: !args.no_wait,
        retry_failed: args.retry_failed,
        model_version: dir.version()?,
        model_dim: dir.config.embed_dim,
    };
    for d in &run.roots {
        anyhow::ensure!(d.is_dir(), "{} is not a directory", d.display());
    }
    eprintln!("coordinator: metrics on http://{metrics}/metrics; publishing to {}", config.broker.broker_config().queue_name(broker::Queue::Jobs));
    let mut last = None;
    let report = roles::run_coordinator(&config, run, shutdown, |c| {
        if last != Some(*c) {
            eprintln!("progress: {} of {} jobs done ({} completed, {} failed, {} open)", c.completed + c.failed + c.cancelled, c.total(), c.completed, c.failed, c.open());
            last = Some(*c);
        }
    })
    .await?;
    let c = report.counts;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "sessionId": report.session.id,
                "status": report.session.status,
                "resumed": report.resumed,
                "jobsCreated": report.jobs_created,
                "published": report.published,
                "completed": c.completed,
                "failed": c.failed,
                "open": c.open(),
                "skippedUnchanged": report.scan.unchanged,
                "scanSeconds": report.scan_seconds,
                "publishSeconds": report.publish_seconds,
                "pipelineSeconds": report.pipeline_seconds,
                "imagesPerSecond": if report.pipeline_seconds > 0.0 { report.finished_this_run as f64 / report.pipeline_seconds } else { 0.0 },
            })
        );
    } else {
        println!(
            "session {} {}: {} jobs published, {} completed, {} failed, {} open",
            report.session.id,
            report.session.status.as_str(),
            report.published,
            c.completed,
            c.failed,
            c.open()
        );
    }
    Ok(())
}

pub async fn embedder(config: Config) -> Result<()> {
    let shutdown = shutdown_on_signals()?;
    let metrics = roles::serve_metrics(config.embedder.metrics_addr, shutdown.clone()).await?;
    let c = config.clone();
    // an embedder embeds images only
    let model = Arc::new(tokio::task::spawn_blocking(move || load_model(&c, Towers::Image)).await??);
    eprintln!(
        "embedder: metrics on http://{metrics}/metrics; model {} on {}; consuming {}",
        model.name,
        model.image_device(),
        config.broker.broker_config().queue_name(broker::Queue::Jobs)
    );
    let stats = roles::run_embedder(&config, model, shutdown).await?;
    eprintln!(
        "embedder stopped: {} embedded, {} failed, {} dropped, {} dead-lettered, {} retried",
        stats.embedded, stats.failed, stats.dropped, stats.dead_lettered, stats.retried
    );
    Ok(())
}

pub async fn writer(config: Config) -> Result<()> {
    let shutdown = shutdown_on_signals()?;
    let metrics = roles::serve_metrics(config.writer.metrics_addr, shutdown.clone()).await?;
    eprintln!("writer: metrics on http://{metrics}/metrics; consuming {}", config.broker.broker_config().queue_name(broker::Queue::Embeddings));
    let stats = roles::run_writer(&config, shutdown).await?;
    eprintln!("writer stopped: {} completed, {} failed, {} skipped, {} dead-lettered", stats.completed, stats.failed, stats.skipped, stats.dead_lettered);
    Ok(())
}
