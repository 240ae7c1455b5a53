//! Coordinator, the *jobs* stage: creates or resumes a session, has the roots scanned, records one
//! job per asset that needs embedding, and hands out the jobs that are not finished. It writes only
//! to the catalog; publishing the jobs (in-process queue or RabbitMQ) is the wiring's business.
//!
//! Resuming is what makes Ctrl-C and crashes harmless: a session that is pending, running or paused
//! for the same roots is taken up again, and only its jobs that are not completed, failed or
//! cancelled are handed out again, so a finished asset is never embedded twice.

mod metrics;

use std::{path::PathBuf, time::Duration};

use catalog::{Catalog, CatalogError, JobStatus, NewSession, Page, Session, SessionStatus};
use ingest::{ScanError, ScanReport};
use protocol::EmbedJob;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl CoordinatorError {
    /// Whether trying again later can work: the broker or the catalog went away, or a publish was
    /// refused, or a transaction lost a race.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinatorError::Catalog(e) => e.is_retryable(),
            CoordinatorError::Broker(e) => e.is_retryable(),
            CoordinatorError::Scan(_) => false,
        }
    }
}

type Result<T> = std::result::Result<T, CoordinatorError>;

/// How a session's roots are written in its `root_path`: canonical paths joined by a newline.
pub fn roots_key(roots: &[PathBuf]) -> String {
    let mut keys: Vec<String> = roots.iter().map(|r| protocol::paths::to_stored(&r.canonicalize().unwrap_or_else(|_| r.clone()))).collect();
    keys.sort();
    keys.dedup();
    keys.join("\n")
}

/// A session made ready to run: scanned, with its jobs recorded.
#[derive(Debug)]
pub struct Prepared {
    pub session: Session,
    pub resumed: bool,
    pub scan: ScanReport,
    pub jobs_created: u64,
}

/// The session an `index` of these roots continues: one not yet finished, for the same roots.
pub async fn resumable_session(catalog: &Catalog, key: &str) -> Result<Option<Session>> {
    for status in [SessionStatus::Running, SessionStatus::Paused, SessionStatus::Pending] {
        let page = catalog.list_sessions(Some(status), Page::new(0, 1000)).await?;
        if let Some(s) = page.items.into_iter().find(|s| s.root_path == key) {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Scans the roots into a new or resumed session, records its jobs and moves it to running.
/// Unchanged files that failed permanently get a job only with `retry_failed`.
pub async fn prepare(catalog: &Catalog, roots: &[PathBuf], category_id: Option<i64>, name: Option<String>, retry_failed: bool) -> Result<Prepared> {
    let key = roots_key(roots);
    let existing = resumable_session(catalog, &key).await?;
    let resumed = existing.is_some();
    let session = match existing {
        Some(s) => s,
        None => {
            let name = name.unwrap_or_else(|| format!("index {}", key.replace('\n', ", ")));
            catalog.create_session(NewSession { name, root_path: key, category_id }).await?
        }
    };
    prepare_session(catalog, session, roots, resumed, retry_failed).await
}

/// Scans an existing session's roots, records its jobs and moves it to running.
/// Subdirectories the user deselected are not scanned.
pub async fn prepare_session(catalog: &Catalog, session: Session, roots: &[PathBuf], resumed: bool, retry_failed: bool) -> Result<Prepared> {
    let exclude: Vec<PathBuf> = catalog.list_subdirectories(session.id).await?.into_iter().filter(|d| !d.selected).map(|d| protocol::paths::from_stored(&d.path)).collect();
    // the jobs are added a chunk at a time as the scan records the files, and counted once at the end
    let mut scan = ingest::Scan::start(catalog, roots, &exclude, ingest::ScanOptions { category_id: session.category_id, retry_failed }).await?;
    let mut jobs_created = 0;
    let added: Result<()> = async {
        while let Some(ids) = scan.next_chunk().await? {
            jobs_created += catalog.add_jobs(session.id, &ids).await?;
        }
        Ok(())
    }
    .await;
    let scan = scan.finish().await;
    // recounted even when the scan failed midway: the chunks before may have reopened failed jobs
    let recounted = catalog.recount_session(session.id).await;
    added?;
    recounted?;
    let session = match session.status {
        SessionStatus::Pending | SessionStatus::Paused => catalog.transition_session(session.id, SessionStatus::Running).await?,
        _ => catalog.get_session(session.id).await?,
    };
    tracing::info!(session = %session.id, resumed, jobs_created, "session prepared");
    Ok(Prepared { session, resumed, scan, jobs_created })
}

/// Cancels every job of the session that has not finished; returns how many.
pub async fn cancel_open_jobs(catalog: &Catalog, session_id: i64) -> Result<u64> {
    let mut cancelled = 0;
    for status in [JobStatus::Pending, JobStatus::Queued, JobStatus::Running] {
        loop {
            let page = catalog.list_jobs(session_id, Some(status), Page::new(0, 1000)).await?;
            if page.items.is_empty() {
                break;
            }
            for job in page.items {
                match catalog.cancel_job(job.id).await {
                    Ok(_) => cancelled += 1,
                    // finished meanwhile: nothing to cancel
                    Err(CatalogError::InvalidTransition { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(cancelled)
}

/// Publishes the session's pending jobs to the broker's jobs queue (pipelined confirms, in batches
/// of 500) and marks each batch queued once it is confirmed. Returns how many were published.
///
/// Queued jobs are not published again: the broker confirmed them, so it holds them durably. A crash
/// between a confirm and the mark leaves those jobs pending, and the next run publishes them again;
/// the duplicate is harmless (the writer moves a job only forward, and the point id is the asset id).
pub async fn publish_pending(catalog: &Catalog, broker: &broker::Broker, session: &Session) -> Result<u64> {
    let mut published = 0;
    publish_pending_counted(catalog, broker, session, &mut published).await?;
    Ok(published)
}

/// `publish_pending`, counting into `published` as each batch is confirmed (so a caller that
/// retries after a lost connection knows what went out before it).
async fn publish_pending_counted(catalog: &Catalog, broker: &broker::Broker, session: &Session, published: &mut u64) -> Result<()> {
    // the session's jobs are wanted: embedders that still hold a pause of it (a session paused,
    // then restarted and started afresh) take them again. Every publish of a session's jobs goes
    // through here, so no way of starting one can leave its jobs to be dropped.
    broker.publish_control(&session.id.to_string(), broker::ControlAction::Resume).await?;
    let mut pages = JobPages::new(session, &[JobStatus::Pending], 500);
    while let Some(chunk) = pages.next(catalog).await? {
        let started = std::time::Instant::now();
        // each job starts its asset's trace; the embedder and the writer continue it from the headers
        let spans: Vec<tracing::Span> =
            chunk.iter().map(|j| tracing::info_span!(parent: None, "publish_job", job_id = %j.job_id, asset_id = %j.asset_id, session_id = %j.session_id)).collect();
        let messages: Vec<(&EmbedJob, Option<String>)> = chunk.iter().zip(&spans).map(|(j, span)| (j, broker::trace::traceparent_of(span))).collect();
        broker.publish_batch(broker::Queue::Jobs, &messages).await?;
        drop(spans);
        metrics::METRICS.publish_seconds.observe(started.elapsed().as_secs_f64());
        let marks: Vec<(i64, String)> = chunk.iter().map(|j| (j.job_id, j.job_id.to_string())).collect();
        catalog.mark_jobs_queued(&marks).await?;
        metrics::METRICS.jobs_published.inc_by(chunk.len() as u64);
        *published += chunk.len() as u64;
    }
    tracing::info!(session = %session.id, published = *published, "jobs published");
    Ok(())
}

/// A session's jobs in some states, a page at a time by job id (a keyset walk: jobs finishing
/// meanwhile never make it skip one, and only one page is held).
pub struct JobPages {
    session: Session,
    statuses: Vec<JobStatus>,
    page: i64,
    after: i64,
    done: bool,
}

impl JobPages {
    pub fn new(session: &Session, statuses: &[JobStatus], page: i64) -> Self {
        JobPages { session: session.clone(), statuses: statuses.to_vec(), page, after: 0, done: false }
    }

    /// The session the pages are of.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next page, as the messages the embed stage takes; `None` after the last. A call that
    /// fails moves nothing: calling again reads the same page.
    pub async fn next(&mut self, catalog: &Catalog) -> Result<Option<Vec<EmbedJob>>> {
        if self.done {
            return Ok(None);
        }
        let page = catalog.jobs_after(self.session.id, &self.statuses, self.after, self.page).await?;
        let Some(last) = page.last() else {
            self.done = true;
            return Ok(None);
        };
        let ids: Vec<i64> = page.iter().map(|j| j.asset_id).collect();
        let assets: std::collections::HashMap<i64, catalog::Asset> = catalog.assets_by_ids(&ids).await?.into_iter().map(|a| (a.id, a)).collect();
        self.after = last.id;
        self.done = (page.len() as i64) < self.page;
        let jobs = page
            .into_iter()
            .filter_map(|job| {
                let asset = assets.get(&job.asset_id)?;
                Some(EmbedJob {
                    v: protocol::VERSION,
                    job_id: job.id,
                    asset_id: asset.id,
                    session_id: self.session.id,
                    path: asset.path.clone(),
                    created_at: asset.created_at,
                    category_id: asset.category_id,
                    attempt: job.attempts as u32 + 1,
                })
            })
            .collect();
        Ok(Some(jobs))
    }
}

/// Ends a session whose jobs are all finished: completed (failed files are counted, not fatal).
pub async fn finish_if_done(catalog: &Catalog, session_id: i64) -> Result<Session> {
    let session = catalog.get_session(session_id).await?;
    if job_counts(catalog, session_id).await?.open() == 0 && session.status == SessionStatus::Running {
        return Ok(catalog.transition_session(session_id, SessionStatus::Completed).await?);
    }
    Ok(session)
}

/// The session's subdirectories, recorded from a scan of its roots the first time they are asked
/// for (all selected), with fresh image counts on later calls (selections kept).
pub async fn subdirectories(catalog: &Catalog, session: &Session) -> Result<Vec<catalog::Subdirectory>> {
    let roots: Vec<PathBuf> = session.root_path.lines().map(protocol::paths::from_stored).collect();
    let mut found = Vec::new();
    for root in roots {
        let scan = tokio::task::spawn_blocking(move || ingest::subdirectories(&root, true)).await.expect("counting does not panic")?;
        found.extend(scan.directories.into_iter().map(|d| (d.path, d.name, d.image_count)));
    }
    catalog.upsert_subdirectories(session.id, &found).await?;
    Ok(catalog.list_subdirectories(session.id).await?)
}

/// Publishes the session's pending jobs over a broker connection of its own, connecting again with
/// backoff whenever the connection is lost midway (what was confirmed is marked; the rest is
/// published on the next try). `None` when `shutdown` fired first.
pub async fn publish_pending_retrying(catalog: &Catalog, config: &broker::BrokerConfig, session: &Session, shutdown: &tokio_util::sync::CancellationToken) -> Result<Option<u64>> {
    let mut published = 0;
    loop {
        let Some(broker) = broker::connect_with_backoff(config, shutdown).await else { return Ok(None) };
        let broker = broker?;
        match publish_pending_counted(catalog, &broker, session, &mut published).await {
            Ok(()) => {
                let _ = broker.close().await;
                return Ok(Some(published));
            }
            Err(CoordinatorError::Broker(e)) if e.is_retryable() => tracing::warn!(error = %e, "lost the broker or a publish was refused; publishing the rest again"),
            Err(e) => return Err(e),
        }
    }
}

/// A session's jobs by status, for progress lines and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl JobCounts {
    pub fn open(&self) -> i64 {
        self.pending + self.queued + self.running
    }

    pub fn total(&self) -> i64 {
        self.open() + self.completed + self.failed + self.cancelled
    }
}

pub async fn job_counts(catalog: &Catalog, session_id: i64) -> Result<JobCounts> {
    let mut c = JobCounts::default();
    for (status, n) in catalog.count_jobs(session_id).await? {
        *match status {
            JobStatus::Pending => &mut c.pending,
            JobStatus::Queued => &mut c.queued,
            JobStatus::Running => &mut c.running,
            JobStatus::Completed => &mut c.completed,
            JobStatus::Failed => &mut c.failed,
            JobStatus::Cancelled => &mut c.cancelled,
        } = n;
    }
    Ok(c)
}

/// How `watch` recovers jobs stranded in `queued` or `running`: a message dead-lettered by the
/// broker's backstop, a result the writer dead-lettered, a job dropped by an embedder that heard a
/// pause. When the session has such jobs, none pending, no job finished for `stall`, and nothing
/// waits in the jobs and results queues, they are made pending and published again (their
/// attempts kept). One still in the queue then comes
/// twice; the writer skips the second.
#[derive(Debug, Clone)]
pub struct Stranded {
    pub broker: broker::BrokerConfig,
    pub stall: Duration,
}

/// Keeps a running session's progress: every `interval` it counts the jobs (the
/// `imgsearch_coordinator_session_jobs` gauge), tells `on_progress`, completes the session once no
/// job is open, and with `stranded` publishes again the jobs stranded in `queued` or `running`. Returns the
/// session when it is no longer running, or when `shutdown` fires.
pub async fn watch(
    catalog: &Catalog,
    session_id: i64,
    interval: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    stranded: Option<&Stranded>,
    mut on_progress: impl FnMut(&JobCounts),
) -> Result<Session> {
    let (mut finished, mut since) = (-1, tokio::time::Instant::now());
    let mut last: Option<Session> = None;
    loop {
        // a database or broker that went away (a restart, a terminated connection) is waited
        // out: the watch goes on with the next round, it does not end the session's coordinator
        match watch_round(catalog, session_id, stranded, shutdown, &mut finished, &mut since, &mut on_progress).await {
            Ok(session) if session.status != SessionStatus::Running => return Ok(session),
            Ok(session) => last = Some(session),
            Err(e) if e.is_retryable() => tracing::warn!(error = %e, session = session_id, "cannot watch the session for now; trying again"),
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return match last {
                Some(session) => Ok(session),
                None => Ok(catalog.get_session(session_id).await?),
            },
        }
    }
}

/// One round of `watch`: counts, completion, and the stranded jobs' recovery.
async fn watch_round(
    catalog: &Catalog,
    session_id: i64,
    stranded: Option<&Stranded>,
    shutdown: &tokio_util::sync::CancellationToken,
    finished: &mut i64,
    since: &mut tokio::time::Instant,
    on_progress: &mut impl FnMut(&JobCounts),
) -> Result<Session> {
    let counts = job_counts(catalog, session_id).await?;
    metrics::set_session_jobs(&counts);
    on_progress(&counts);
    let session = finish_if_done(catalog, session_id).await?;
    if session.status != SessionStatus::Running {
        return Ok(session);
    }
    let now_finished = counts.completed + counts.failed + counts.cancelled;
    if now_finished != *finished {
        (*finished, *since) = (now_finished, tokio::time::Instant::now());
    } else if let Some(s) = stranded
        && counts.queued + counts.running > 0
        && counts.pending == 0
        && since.elapsed() >= s.stall
        && queues_empty(&s.broker).await?
    {
        let moved = catalog.requeue_open_jobs(session_id).await?;
        tracing::warn!(session = session_id, jobs = moved, stalled_for = ?s.stall, "jobs stranded in queued or running: publishing them again");
        publish_pending_retrying(catalog, &s.broker, &session, shutdown).await?;
        *since = tokio::time::Instant::now();
    }
    Ok(session)
}

/// Whether nothing waits in the jobs and results queues: a stalled session's open jobs are then
/// either held by a worker or lost. While messages wait (the workers are down, or a store is away
/// and the writers hold their batches), nothing is stranded and nothing is published twice.
async fn queues_empty(config: &broker::BrokerConfig) -> Result<bool> {
    let broker = broker::Broker::connect(config.clone()).await?;
    let mut waiting = 0;
    for q in [broker::Queue::Jobs, broker::Queue::Embeddings] {
        waiting += broker.queue_depth(&config.queue_name(q)).await?;
    }
    let _ = broker.close().await;
    Ok(waiting == 0)
}

/// Pauses or cancels a running session for the distributed wiring: the catalog first (cancel also
/// cancels its open jobs), then a control to every embedder, which drops the session's queued jobs
/// without work.
pub async fn stop_session(catalog: &Catalog, broker: &broker::Broker, session_id: i64, cancel: bool) -> Result<Session> {
    let (to, action) = if cancel { (SessionStatus::Cancelled, broker::ControlAction::Cancel) } else { (SessionStatus::Paused, broker::ControlAction::Pause) };
    let session = catalog.transition_session(session_id, to).await?;
    if cancel {
        cancel_open_jobs(catalog, session_id).await?;
    }
    broker.publish_control(&session_id.to_string(), action).await?;
    Ok(session)
}

/// Resumes a paused session for the distributed wiring: the jobs the embedders dropped meanwhile
/// (queued, not finished) are published again, after a control that tells them to take its jobs.
/// A job that was still in the queue then comes twice; the writer skips the second.
pub async fn resume_session(catalog: &Catalog, broker: &broker::Broker, session_id: i64) -> Result<(Session, u64)> {
    let session = catalog.transition_session(session_id, SessionStatus::Running).await?;
    catalog.requeue_open_jobs(session_id).await?;
    let published = publish_pending(catalog, broker, &session).await?;
    Ok((session, published))
}
