//! `index`, `search` and `status`: argument handling and output; the work is in the library.

use std::{collections::BTreeMap, io::IsTerminal, sync::Arc};

use anyhow::{Context, Result, bail};
use catalog::SessionStatus;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clip::Towers;
use embedder::Embedder;
use imgsearch::{
    App, manage,
    pipeline::{self, PipelineOptions},
    search::{SearchRequest, search_text},
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use vectors::{DEFAULT_COLLECTION, PointFilter};
use writer::Writer;

use crate::{
    cli::{IndexArgs, Overlap, SearchArgs, ServeArgs, StatusArgs, VectorsCommand},
    model_commands::load_model,
};

pub async fn index(args: IndexArgs) -> Result<()> {
    for d in &args.dirs {
        if !d.is_dir() {
            bail!("{} is not a directory", d.display());
        }
    }
    let app = App::open_embedded(&imgsearch::app::data_dir(args.data.data_dir.clone())?).await?;
    let model_args = args.model.clone();
    let model = Arc::new(tokio::task::spawn_blocking(move || load_model(&model_args, Towers::Image)).await??);
    let collection = app.collection_for(&model.version, model.embed_dim).await?;
    let category = imgsearch::app::category_id(&app.catalog, args.category.as_deref(), true).await?;

    let scanning = std::time::Instant::now();
    let prepared = coordinator::prepare(&app.catalog, &args.dirs, category, None, args.retry_failed).await.context("cannot scan the folders")?;
    let scan_secs = scanning.elapsed().as_secs_f64();
    // files gone since the last scan: their vectors go, their assets are marked deleted
    let removed_missing = manage::forget_missing(&app.catalog, &app.vectors, &collection, &prepared.scan.missing).await?;
    let open = coordinator::job_counts(&app.catalog, prepared.session.id).await?.open();
    let skipped_unchanged = prepared.scan.skipped_unchanged();
    // what the scan passed over, by reason, with a few paths each
    let mut skipped: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for s in &prepared.scan.skipped {
        let entry = skipped.entry(s.reason).or_default();
        entry.0 += 1;
        if entry.1.len() < 3 {
            entry.1.push(&s.path);
        }
    }

    let bar = if args.json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new(open.max(0) as u64) };
    bar.set_style(ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} images  {per_sec}  eta {eta}  {msg}").expect("static template").progress_chars("=> "));
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: finishing the images in flight (Ctrl-C again to abort)");
            on_ctrl_c.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let embedder = Arc::new(Embedder::new(model.clone(), 0, args.fast_jpeg));
    let writer = Arc::new(Writer { catalog: app.catalog.clone(), vectors: app.vectors.clone(), collection: collection.clone() });
    let overlap = match args.overlap_decode {
        Overlap::On => true,
        Overlap::Off => false,
        Overlap::Auto => model.image_device() != "cpu",
    };
    let options = PipelineOptions { embed_batch: args.batch_size.max(1), overlap_decode: overlap, ..Default::default() };
    let progress = bar.clone();
    let jobs = pipeline::open_jobs(app.catalog.clone(), &prepared.session);
    let stats = pipeline::run(jobs, embedder, writer, options, cancel, move |r| progress.inc((r.completed + r.failed.len()) as u64)).await?;
    bar.finish_and_clear();
    // the HNSW index is built before `index` returns: a search right after is served by it, not
    // by a scan of every point written since the last background optimize
    let optimizing = std::time::Instant::now();
    if stats.completed > 0
        && !stats.interrupted
        && let Err(e) = app.vectors.optimize(&collection).await
    {
        // the vectors are written: searches scan what is not indexed, and the next run or serve optimizes
        tracing::warn!(error = %e, "building the vector index failed");
    }
    let optimize_secs = optimizing.elapsed().as_secs_f64();

    let session = if stats.interrupted {
        app.catalog.transition_session(prepared.session.id, SessionStatus::Paused).await?
    } else {
        coordinator::finish_if_done(&app.catalog, prepared.session.id).await?
    };
    let mut reasons: Vec<(String, usize)> = stats.failed_reasons.clone().into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let secs = stats.elapsed.as_secs_f64();
    let summary = serde_json::json!({
        "session": session.id,
        "sessionStatus": session.status,
        "resumed": prepared.resumed,
        "indexed": stats.completed,
        "skippedUnchanged": skipped_unchanged,
        "hashedFiles": prepared.scan.hashed,
        "failed": stats.failed,
        "failedReasons": reasons.iter().map(|(r, n)| serde_json::json!({"reason": r, "count": n})).collect::<Vec<_>>(),
        "failedExamples": stats.failed_examples.iter().map(|(r, p)| serde_json::json!({"reason": r, "path": p})).collect::<Vec<_>>(),
        "notImages": prepared.scan.skipped.iter().filter(|s| s.reason == "not_an_image").count(),
        "skipped": skipped.iter().map(|(r, (n, _))| (r.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
        "skippedExamples": skipped.iter().map(|(r, (_, e))| (r.to_string(), serde_json::json!(e))).collect::<serde_json::Map<_, _>>(),
        "missingOnDisk": prepared.scan.missing.len(),
        "removedVectorsOfMissing": removed_missing,
        "seconds": secs,
        // the walk and the catalog records of it (the session and its jobs included)
        "scanSeconds": scan_secs,
        "optimizeSeconds": optimize_secs,
        "imagesPerSecond": if secs > 0.0 { (stats.completed + stats.failed) as f64 / secs } else { 0.0 },
        "embedFlushes": stats.embed_flushes,
        "collection": collection,
        "dataDir": app.data_dir,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "indexed {} images, skipped {} unchanged, {} failed in {:.1}s ({:.1} images/s)",
            stats.completed,
            skipped_unchanged,
            stats.failed,
            secs,
            summary["imagesPerSecond"].as_f64().unwrap_or(0.0)
        );
        for (reason, n) in reasons.iter().take(5) {
            let example = stats.failed_examples.iter().find(|(r, _)| r == reason).map(|(_, p)| p.as_str()).unwrap_or("");
            println!("  failed: {n} x {reason} (e.g. {example})");
        }
        for (reason, (n, examples)) in &skipped {
            println!("  skipped: {n} x {reason} (e.g. {})", examples.join(", "));
        }
        if !prepared.scan.missing.is_empty() {
            println!("  {} files are gone from disk: their {removed_missing} vectors were removed", prepared.scan.missing.len());
        }
        if stats.interrupted {
            println!("stopped; session {} is paused, run the same command again to resume", session.id);
        }
    }
    app.catalog.close().await;
    Ok(())
}

/// A date alone means its whole day (UTC): the start for `--from`, the last microsecond for `--to`.
fn parse_time(s: &str, end_of_day: bool) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| format!("{s:?} is neither RFC 3339 (2024-01-31T12:00:00Z) nor a date (2024-01-31)"))?;
    let time = if end_of_day { NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("valid time") } else { NaiveTime::MIN };
    Ok(date.and_time(time).and_utc())
}

pub async fn search(args: SearchArgs) -> Result<()> {
    let from = args.from.as_deref().map(|s| parse_time(s, false)).transpose()?;
    let to = args.to.as_deref().map(|s| parse_time(s, true)).transpose()?;
    let app = App::open_embedded(&imgsearch::app::data_dir(args.data.data_dir.clone())?).await?;
    let category = imgsearch::app::category_id(&app.catalog, args.category.as_deref(), false).await?;
    let req = SearchRequest { query: args.query.clone(), limit: args.limit, offset: args.offset, filter: PointFilter { from, to, category_id: category, path_prefix: None } };
    let hits = match ask_serve(&app, &req).await? {
        Some(hits) => hits,
        None => {
            // the model and the shard load side by side (the shard's load is a pass over its
            // points' ids: at a million images it is most of the time)
            let model_args = args.model.clone();
            let model = tokio::task::spawn_blocking(move || load_model(&model_args, Towers::Text));
            let (model, opened) = tokio::join!(model, app.vectors.spec(DEFAULT_COLLECTION));
            let model = Arc::new(model??);
            opened?;
            search_text(&app.catalog, &app.vectors, &[model], &req).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"query": args.query, "results": hits, "total": hits.len()}))?);
    } else if hits.is_empty() {
        eprintln!("no results (is anything indexed? `imgsearch status` tells)");
    } else {
        for (i, h) in hits.iter().enumerate() {
            println!("{:>3}. {:.4}  {}", args.offset + i + 1, h.score, h.asset.path);
        }
    }
    Ok(())
}

/// The answer of a `serve` running on this data directory (`serve.json`), hydrated from the
/// catalog here, so the output is what a local search prints; `None`: no server is there.
async fn ask_serve(app: &App, req: &SearchRequest) -> Result<Option<Vec<imgsearch::search::SearchHit>>> {
    let Some(advert) = imgsearch::local_serve::find(&app.data_dir) else { return Ok(None) };
    let token = std::env::var("IMGSEARCH_AUTH_TOKEN").ok().map(secrecy::SecretString::from);
    let asked = req.clone();
    let url = advert.url.clone();
    let answer = tokio::task::spawn_blocking(move || {
        use secrecy::ExposeSecret;
        imgsearch::local_serve::search(&advert, &asked, token.as_ref().map(|t| t.expose_secret()))
    })
    .await??;
    let Some(hits) = answer else {
        tracing::debug!(%url, "serve.json names a server that is not there: searching here");
        return Ok(None);
    };
    eprintln!("(answered by the server at {url}, which holds this data directory)");
    Ok(Some(imgsearch::search::hydrate(&app.catalog, hits).await?))
}

pub async fn status(args: StatusArgs) -> Result<()> {
    let app = App::open_embedded(&imgsearch::app::data_dir(args.data.data_dir.clone())?).await?;
    let counts = app.catalog.counts().await?;
    let failures = app.catalog.failures(3).await?;
    let info = app.vectors.info(DEFAULT_COLLECTION).await?;
    let assets: i64 = counts.assets.values().sum();
    let out = serde_json::json!({
        "dataDir": app.data_dir,
        "assets": assets,
        "assetsByStatus": counts.assets,
        "vectors": info.as_ref().map(|i| i.points).unwrap_or(0),
        "collection": info.as_ref().map(|i| i.name.clone()),
        "modelVersion": info.as_ref().and_then(|i| i.model_version.clone()),
        "indexedVectors": info.as_ref().map(|i| i.indexed_vectors).unwrap_or(0),
        "payloadIndexes": info.as_ref().map(|i| i.payload_indexes.clone()).unwrap_or_default(),
        "sessions": counts.sessions,
        "failedJobs": counts.failed_jobs,
        "failedAssets": failures.iter().map(|f| f.count).sum::<i64>(),
        "failures": failures,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let by: BTreeMap<String, i64> = counts.assets;
    println!("data dir:  {}", app.data_dir.display());
    println!("assets:    {assets} ({})", by.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
    match &info {
        Some(i) => println!(
            "vectors:   {} in {} (model {}), {} in the HNSW index; payload indexes: {}",
            i.points,
            i.name,
            i.model_version.as_deref().unwrap_or("?"),
            i.indexed_vectors,
            i.payload_indexes.join(", ")
        ),
        None => println!("vectors:   none yet"),
    }
    println!("sessions:  {}", counts.sessions.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
    let failed_assets: i64 = failures.iter().map(|f| f.count).sum();
    println!("failures:  {failed_assets} files failed ({} failed jobs in all sessions); `index --retry-failed` tries them again", counts.failed_jobs);
    for f in &failures {
        println!("  {:>6} x {:<20} e.g. {}", f.count, f.reason, f.examples.join(", "));
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let app = App::open(&imgsearch::app::data_dir(args.data.data_dir.clone())?, args.qdrant_url.as_deref()).await?;
    let model_args = args.model.clone();
    // searches embed texts, sessions embed images
    let model = Arc::new(tokio::task::spawn_blocking(move || load_model(&model_args, Towers::Both)).await??);
    let collection = app.collection_for(&model.version, model.embed_dim).await?;
    let state =
        imgsearch::api::ApiState::new(app.catalog.clone(), app.vectors.clone(), model, collection, allowed_roots(&args.allow_roots)?, Some(app.data_dir.join("thumbnails")));
    run_api(state, &args, &format!("data in {}", app.data_dir.display()), Some(&app.data_dir)).await?;
    app.catalog.close().await;
    Ok(())
}

/// `--allow-root`, else the home directory.
fn allowed_roots(given: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    if given.is_empty() { Ok(vec![dirs::home_dir().context("no home directory; pass --allow-root DIR")?]) } else { Ok(given.to_vec()) }
}

/// A token cancelled by Ctrl-C.
/// Cancelled on Ctrl-C, and on SIGTERM (what `docker stop`, systemd and `kill` send): a server
/// stopped either way finishes its requests and flushes the store.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { std::future::pending::<()>().await },
            () = term => {}
        }
        on_signal.cancel();
    });
    token
}

/// The token from `--auth-token-file` or `IMGSEARCH_AUTH_TOKEN` (at least 16 characters).
fn auth_token(args: &crate::cli::AccessArgs) -> Result<Option<secrecy::SecretString>> {
    let token = match (&args.auth_token_file, &args.auth_token) {
        (Some(file), _) => std::fs::read_to_string(file).with_context(|| format!("cannot read the token file {}", file.display()))?,
        (None, Some(token)) => token.clone(),
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    anyhow::ensure!(token.chars().count() >= 16, "the auth token must be at least 16 characters (e.g. `openssl rand -hex 32`)");
    Ok(Some(secrecy::SecretString::from(token.to_owned())))
}

/// Listens on `--addr`, says where (`serving http://ADDR (about)`), and serves until Ctrl-C or
/// SIGTERM. Refuses an address beyond loopback without a token, unless `--insecure-no-auth`.
/// `data_dir`: the embedded store's, where `serve.json` tells `imgsearch search` where to ask.
async fn run_api(state: std::sync::Arc<imgsearch::api::ApiState>, args: &ServeArgs, about: &str, data_dir: Option<&std::path::Path>) -> Result<()> {
    let (addr, cors_origins, access) = (args.addr, &args.cors_origins, &args.access);
    let token = auth_token(access)?;
    if token.is_none() && !addr.ip().is_loopback() && !access.insecure_no_auth {
        anyhow::bail!(
            "refusing to serve on {addr} without a token: anyone who reaches it could change or delete the index. Give --auth-token-file FILE (or IMGSEARCH_AUTH_TOKEN), listen on 127.0.0.1, or pass --insecure-no-auth"
        );
    }
    let mut state = std::sync::Arc::into_inner(state).context("a new state has one owner")?;
    state.cors = imgsearch::api::cors(cors_origins)?;
    state.access = imgsearch::api::guard::Access {
        token,
        scope: access.auth,
        hosts: imgsearch::api::guard::Access::default_hosts(addr, &access.allowed_hosts),
        origins: cors_origins.iter().map(|o| o.trim_end_matches('/').to_owned()).collect(),
    };
    state.upload_limit = access.max_upload_mb.max(1) << 20;
    state.max_connections = access.max_connections.max(1);
    state.idle_timeout = std::time::Duration::from_secs(access.idle_timeout_s.max(1));
    state.model_roots = crate::model_commands::model_cache_dir(args.model.model_cache.clone())
        .into_iter()
        .chain(access.model_roots.iter().cloned())
        .filter_map(|r| r.canonicalize().ok())
        .collect();
    if let Some(n) = access.max_heavy_requests {
        state.heavy = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
    }
    let state = std::sync::Arc::new(state);
    // points an interrupted `index` or an earlier serve wrote after its last optimize go into the
    // HNSW index now, beside the searches (which read the old segments until the swap)
    let (vectors, collection) = (state.vectors.clone(), state.collection());
    tokio::spawn(async move {
        match vectors.optimize(&collection).await {
            // nothing indexed yet
            Ok(()) => {}
            Err(vectors::VectorError::NoCollection(_)) => return,
            Err(e) => tracing::warn!(error = %e, "optimizing the vector index at start failed"),
        }
        // then into the page cache, beside the searches: the first ones of each filter would
        // otherwise wait on the disk (1M images: c=1 filtered p99 165 ms cold)
        match vectors.warm(&collection).await {
            Ok(bytes) => tracing::info!(bytes, "vector store read into the page cache"),
            Err(e) => tracing::warn!(error = %e, "reading the vector store into the page cache failed"),
        }
    });
    // every connection is a file descriptor: the soft limit (often 1,024) goes up to the hard one
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // written before the line below (which says the server is up), removed when this returns; a
    // server that cannot write it still serves (the CLI then says the store is in use, as before)
    let _advert = data_dir.and_then(|dir| {
        imgsearch::local_serve::advertise(dir, local).inspect_err(|e| tracing::warn!(error = %format!("{e:#}"), "cannot tell `imgsearch search` where this server is")).ok()
    });
    eprintln!("serving http://{local} ({about})");
    imgsearch::api::serve(state, listener, cancel_on_signal()).await
}

/// The API of the distributed wiring: the catalog in PostgreSQL, the vectors in Qdrant, started
/// sessions published to RabbitMQ for the embedder and writer processes (all from the config).
pub async fn serve_distributed(args: ServeArgs, config: imgsearch::config::Config) -> Result<()> {
    let catalog = imgsearch::roles::open_catalog(&config).await?;
    let vectors = imgsearch::roles::open_vectors(&config)?;
    let c = config.clone();
    let model = Arc::new(tokio::task::spawn_blocking(move || crate::role_commands::load_model(&c, Towers::Both)).await??);
    let collection = imgsearch::app::collection_for(&vectors, &model.version, model.embed_dim).await?;
    let state = imgsearch::api::ApiState::distributed(catalog.clone(), vectors, model, collection, allowed_roots(&args.allow_roots)?, config.broker.broker_config());
    run_api(state, &args, &format!("distributed: sessions go to {}", config.broker.broker_config().queue_name(broker::Queue::Jobs)), None).await?;
    catalog.close().await;
    Ok(())
}

/// `imgsearch vectors ...` on the embedded data dir, or the distributed stores with `--config`.
pub async fn vectors(command: VectorsCommand) -> Result<()> {
    match command {
        VectorsCommand::Reindex(args) => reindex(args).await,
        VectorsCommand::Upgrade { no_swap, store, model } => upgrade(no_swap, store, model).await,
        other => manage_vectors(other).await,
    }
}

async fn upgrade(no_swap: bool, store: crate::cli::VectorsStoreArgs, model: crate::cli::ModelArgs) -> Result<()> {
    {
        let app = open_stores(&store).await?;
        // the upgrade embeds every image again; its searches come after, from `serve` or `search`
        let model = Arc::new(tokio::task::spawn_blocking(move || load_model(&model, Towers::Image)).await??);
        let up = manage::upgrade_model(&app.catalog, &app.vectors, model, !no_swap, cancel_on_signal()).await?;
        if store.json {
            println!("{}", serde_json::to_string_pretty(&up)?);
        } else {
            println!(
                "built {} with model {}: {} indexed, {} failed; {}",
                up.collection,
                up.model_version,
                up.indexed,
                up.failed,
                if up.swapped {
                    format!("search now uses it ({} is kept until `imgsearch vectors drop-collection`)", up.previous.as_deref().unwrap_or("nothing"))
                } else {
                    "the alias was not moved".into()
                }
            );
        }
        app.catalog.close().await;
        Ok(())
    }
}

/// The `vectors` commands that work on the stores as they are.
async fn manage_vectors(command: VectorsCommand) -> Result<()> {
    use imgsearch::manage::Target;
    let json = command.store().json;
    let app = open_stores(command.store()).await?;
    let collection = DEFAULT_COLLECTION;
    let out: serde_json::Value = match command {
        VectorsCommand::Restore { assets, .. } => {
            let n = manage::soft_delete(&app.catalog, &app.vectors, collection, &assets, None, false).await?;
            if !json {
                println!("restored {n} vectors");
            }
            serde_json::json!({"restored": n})
        }
        VectorsCommand::Delete(a) if a.soft => {
            let n = manage::soft_delete(&app.catalog, &app.vectors, collection, &a.assets, a.reason, true).await?;
            if !json {
                println!("hid {n} vectors from searches; `imgsearch vectors restore` brings them back");
            }
            serde_json::json!({"softDeleted": n})
        }
        VectorsCommand::Delete(a) => {
            let target = if !a.assets.is_empty() {
                Target::Assets(a.assets)
            } else if let Some(dir) = a.dir {
                let dir = dir.canonicalize().unwrap_or(dir);
                Target::Directory(protocol::paths::to_stored(&dir).trim_end_matches('/').to_owned())
            } else if let Some(s) = a.session {
                Target::Session(s)
            } else if let Some(name) = a.category {
                Target::Category(imgsearch::app::category_id(&app.catalog, Some(&name), false).await?.expect("a name gives an id"))
            } else {
                bail!("say what to delete: --asset ID, --dir PATH, --session ID or --category NAME");
            };
            let d = manage::delete_vectors(&app.catalog, &app.vectors, collection, target, a.reason, a.yes).await.map_err(|e| match e {
                manage::ManageError::ConfirmationRequired(m) => anyhow::anyhow!("{}; add --yes", m.trim_end_matches("needs confirm: true").trim_end_matches(' ')),
                other => other.into(),
            })?;
            if !json {
                println!("deleted {} vectors; {} assets will be embedded again by the next index (log #{})", d.deleted_vectors, d.assets_updated, d.log.id);
            }
            serde_json::to_value(d)?
        }
        VectorsCommand::Cleanup { dry_run, .. } => {
            let c = manage::cleanup_orphans(&app.catalog, &app.vectors, collection, dry_run).await?;
            if !json {
                let verb = if dry_run { "would" } else { "did" };
                println!("{} vectors scanned; {verb} delete {} orphan vectors and queue {} assets whose vector is missing", c.vectors_scanned, c.orphan_vectors, c.assets_requeued);
            }
            serde_json::to_value(c)?
        }
        VectorsCommand::Reset { yes, reason, .. } => {
            if !yes {
                bail!("a reset deletes every vector; add --yes");
            }
            let d = manage::reset(&app.catalog, &app.vectors, collection, true, Some(manage::RESET_CONFIRMATION), reason).await?;
            if !json {
                println!("deleted {} vectors; {} assets will be embedded again by the next index", d.deleted_vectors, d.assets_updated);
            }
            serde_json::to_value(d)?
        }
        VectorsCommand::Stats { .. } => {
            let stats = manage::directory_stats(&app.catalog).await?;
            if !json {
                for s in &stats {
                    println!("{:>7} assets {:>7} indexed  {}", s.assets, s.indexed, s.directory);
                }
            }
            serde_json::to_value(stats)?
        }
        VectorsCommand::Reindex(_) | VectorsCommand::Upgrade { .. } => unreachable!("vectors() dispatches these"),
        VectorsCommand::DropCollection { name, .. } => {
            let target = app.vectors.info(DEFAULT_COLLECTION).await?.map(|i| i.name);
            if target.as_deref() == Some(name.as_str()) || name == DEFAULT_COLLECTION {
                bail!("{name} is what search uses; upgrade to another collection first");
            }
            let dropped = app.vectors.drop_collection(&name).await?;
            if !dropped {
                bail!("no collection named {name}");
            }
            if !json {
                println!("dropped {name}");
            }
            serde_json::json!({"dropped": name})
        }
        VectorsCommand::Logs { limit, .. } => {
            let logs = app.catalog.list_deletion_logs(catalog::Page::new(0, limit)).await?;
            if !json {
                for l in &logs.items {
                    println!(
                        "#{} {} {} {} vectors {} {}",
                        l.id,
                        l.created_at.to_rfc3339(),
                        l.deletion_type.as_str(),
                        l.vector_count,
                        l.target.as_deref().unwrap_or("-"),
                        l.reason.as_deref().unwrap_or("")
                    );
                }
            }
            serde_json::to_value(logs.items)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    app.catalog.close().await;
    Ok(())
}

/// The stores `vectors` works on: the embedded data dir, or with `--config` the distributed
/// PostgreSQL and Qdrant server.
async fn open_stores(store: &crate::cli::VectorsStoreArgs) -> Result<App> {
    match &store.config {
        Some(path) => {
            let config = imgsearch::config::Config::from_file_and_env(Some(path))?;
            Ok(App { data_dir: std::path::PathBuf::new(), catalog: imgsearch::roles::open_catalog(&config).await?, vectors: imgsearch::roles::open_vectors(&config)? })
        }
        None => App::open_embedded(&imgsearch::app::data_dir(store.data.data_dir.clone())?).await,
    }
}

/// `imgsearch vectors reindex`: marks the assets not indexed (their vectors stay until replaced),
/// then indexes the folders that hold them, which embeds exactly those again.
async fn reindex(args: crate::cli::VectorsReindexArgs) -> Result<()> {
    if args.store.config.is_some() {
        bail!("reindex with --config: run `imgsearch coordinator DIR` for the folders (the workers embed them), or POST /api/v1/vectors/retrain to `serve --config`");
    }
    let data_dir = imgsearch::app::data_dir(args.store.data.data_dir.clone())?;
    let app = App::open_embedded(&data_dir).await?;
    let assets: Vec<catalog::Asset> = if let Some(dir) = &args.dir {
        let dir = dir.canonicalize().with_context(|| format!("{} is not a directory", dir.display()))?;
        app.catalog.assets_under(&protocol::paths::to_stored(&dir)).await?
    } else if args.all {
        let ids = app.catalog.asset_ids(catalog::AssetSelection::All).await?;
        let mut all = Vec::new();
        for chunk in ids.chunks(500) {
            all.extend(app.catalog.assets_by_ids(chunk).await?);
        }
        all
    } else if !args.assets.is_empty() {
        let found = app.catalog.assets_by_ids(&args.assets).await?;
        if found.len() != args.assets.len() {
            bail!("{} of the assets given are not in the catalog", args.assets.len() - found.len());
        }
        found
    } else {
        bail!("say what to embed again: --asset ID, --dir PATH or --all");
    };
    if assets.is_empty() {
        bail!("no asset to embed again there");
    }
    let ids: Vec<i64> = assets.iter().map(|a| a.id).collect();
    // the folders to scan: the given one, else the folders holding the assets (outermost only)
    let mut dirs: Vec<std::path::PathBuf> = match &args.dir {
        Some(d) => vec![d.canonicalize()?],
        None => assets.iter().filter_map(|a| protocol::paths::from_stored(&a.path).parent().map(|p| p.to_owned())).filter(|p| p.is_dir()).collect(),
    };
    dirs.sort();
    dirs.dedup();
    let outermost: Vec<std::path::PathBuf> = dirs.iter().filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o))).cloned().collect();
    app.catalog.mark_unindexed(&ids).await?;
    app.catalog.close().await;
    drop(app);
    if !args.store.json {
        eprintln!("embedding {} assets again, in {} folder(s)", ids.len(), outermost.len());
    }
    index(crate::cli::IndexArgs {
        dirs: outermost,
        category: None,
        batch_size: 32,
        fast_jpeg: false,
        overlap_decode: Overlap::Auto,
        retry_failed: false,
        json: args.store.json,
        data: crate::cli::DataArgs { data_dir: Some(data_dir) },
        model: args.model,
    })
    .await
}
