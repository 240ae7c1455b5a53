//! The session runner: starts, pauses, cancels and stops indexing sessions. In the embedded wiring a
//! started session runs the pipeline in this process; in the distributed one (`serve --config`) its
//! jobs are published to RabbitMQ for the embedder and writer processes and a watch here completes
//! it; pause and cancel then reach the embedders as controls. The API calls it; it knows nothing of
//! HTTP, and holds no state but the sessions running in this process.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use catalog::{Catalog, CatalogError, Session, SessionStatus};
use clip::ClipModel;
use embedder::Embedder;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vectors::{VectorError, VectorStore};
use writer::Writer;

use crate::pipeline::{self, PipelineOptions};

/// How long a session `serve` runs on the workers may make no progress with jobs still queued
/// before those are taken as lost and published again (the coordinator role's
/// `republish_stranded_after_s`, at its default).
const STRANDED_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a session could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Not in a state that allows it (running, finished...).
    #[error("{0}")]
    Conflict(String),
    /// The broker cannot be reached (distributed wiring).
    #[error("{0}")]
    Unavailable(String),
    /// The session's roots cannot be scanned.
    #[error("{0}")]
    Unprocessable(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error("{0}")]
    Internal(String),
}

impl From<coordinator::CoordinatorError> for RunnerError {
    fn from(e: coordinator::CoordinatorError) -> Self {
        match e {
            coordinator::CoordinatorError::Catalog(c) | coordinator::CoordinatorError::Scan(ingest::ScanError::Catalog(c)) => RunnerError::Catalog(c),
            coordinator::CoordinatorError::Broker(b) if b.is_connection_lost() => RunnerError::Unavailable(b.to_string()),
            other => RunnerError::Unprocessable(other.to_string()),
        }
    }
}

impl From<crate::manage::ManageError> for RunnerError {
    fn from(e: crate::manage::ManageError) -> Self {
        match e {
            crate::manage::ManageError::Vectors(v) => RunnerError::Vectors(v),
            crate::manage::ManageError::Catalog(c) => RunnerError::Catalog(c),
            other => RunnerError::Internal(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, RunnerError>;

/// How a run that is stopped ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopAs {
    Pause,
    Cancel,
    /// Stop watching; the session goes on elsewhere (the distributed workers).
    Detach,
}

/// A session running (or watched) in this process.
struct Run {
    cancel: CancellationToken,
    stop_as: Arc<Mutex<StopAs>>,
    task: JoinHandle<()>,
}

impl Run {
    /// Stops the feed; the batches in flight are written; the session ends paused or cancelled.
    async fn stop(self, how: StopAs) {
        *self.stop_as.lock().expect("stop lock") = how;
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

pub struct SessionRunner {
    catalog: Catalog,
    vectors: Arc<VectorStore>,
    /// The distributed wiring: sessions are published to this broker. None: they run here.
    broker: Option<broker::BrokerConfig>,
    runs: Mutex<HashMap<i64, Run>>,
}

impl SessionRunner {
    pub fn new(catalog: Catalog, vectors: Arc<VectorStore>, broker: Option<broker::BrokerConfig>) -> Arc<Self> {
        Arc::new(SessionRunner { catalog, vectors, broker, runs: Mutex::new(HashMap::new()) })
    }

    /// Whether the session runs (or is watched) in this process: it cannot be deleted or restarted.
    pub fn is_running(&self, id: i64) -> bool {
        self.runs.lock().expect("runs lock").contains_key(&id)
    }

    fn take_run(&self, id: i64) -> Option<Run> {
        self.runs.lock().expect("runs lock").remove(&id)
    }

    /// Starts (or resumes) a pending or paused session: scans its roots and indexes in the
    /// background with this model into this collection (or publishes its jobs, distributed).
    pub async fn start(self: &Arc<Self>, id: i64, model: Arc<ClipModel>, collection: String) -> Result<Session> {
        let session = self.catalog.get_session(id).await?;
        if !matches!(session.status, SessionStatus::Pending | SessionStatus::Paused) || self.is_running(id) {
            return Err(RunnerError::Conflict(format!("cannot start session {id}: it is {}", session.status)));
        }
        if let Some(config) = self.broker.clone() {
            return self.start_distributed(session, config, &collection).await;
        }
        let roots: Vec<PathBuf> = session.root_path.lines().map(protocol::paths::from_stored).collect();
        let prepared = coordinator::prepare_session(&self.catalog, session, &roots, false, false).await?;
        crate::manage::forget_missing(&self.catalog, &self.vectors, &collection, &prepared.scan.missing).await?;
        let cancel = CancellationToken::new();
        let stop_as = Arc::new(Mutex::new(StopAs::Pause));
        let task = tokio::spawn(self.clone().run_here(prepared.session.clone(), model, collection, cancel.clone(), stop_as.clone()));
        self.runs.lock().expect("runs lock").insert(id, Run { cancel, stop_as, task });
        Ok(prepared.session)
    }

    async fn connect_broker(config: &broker::BrokerConfig) -> Result<broker::Broker> {
        broker::Broker::connect(config.clone()).await.map_err(|e| RunnerError::Unavailable(e.to_string()))
    }

    /// The distributed start: a paused session is resumed (its dropped jobs published again), a new
    /// one scanned and its jobs published; a watch task here completes it once every job is done.
    async fn start_distributed(self: &Arc<Self>, session: Session, config: broker::BrokerConfig, collection: &str) -> Result<Session> {
        let id = session.id;
        let broker = Self::connect_broker(&config).await?;
        let session = if session.status == SessionStatus::Paused {
            coordinator::resume_session(&self.catalog, &broker, id).await?.0
        } else {
            let roots: Vec<PathBuf> = session.root_path.lines().map(protocol::paths::from_stored).collect();
            let prepared = coordinator::prepare_session(&self.catalog, session, &roots, false, false).await?;
            crate::manage::forget_missing(&self.catalog, &self.vectors, collection, &prepared.scan.missing).await?;
            coordinator::publish_pending(&self.catalog, &broker, &prepared.session).await?;
            prepared.session
        };
        let _ = broker.close().await;
        let cancel = CancellationToken::new();
        let stop_as = Arc::new(Mutex::new(StopAs::Detach));
        let (runner, token) = (self.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            let stranded = coordinator::Stranded { broker: config, stall: STRANDED_AFTER };
            if let Err(e) = coordinator::watch(&runner.catalog, id, std::time::Duration::from_secs(1), &token, Some(&stranded), |_| {}).await {
                tracing::error!(session = %id, error = %e, "cannot keep the session's progress");
            }
            runner.runs.lock().expect("runs lock").remove(&id);
        });
        self.runs.lock().expect("runs lock").insert(id, Run { cancel, stop_as, task });
        Ok(session)
    }

    /// The embedded run: the pipeline over the session's open jobs, then the session's end.
    async fn run_here(self: Arc<Self>, session: catalog::Session, model: Arc<ClipModel>, collection: String, cancel: CancellationToken, stop_as: Arc<Mutex<StopAs>>) {
        let embedder = Arc::new(Embedder::new(model.clone(), 0, false));
        let writer = Arc::new(Writer { catalog: self.catalog.clone(), vectors: self.vectors.clone(), collection });
        let options = PipelineOptions { overlap_decode: model.image_device() != "cpu", ..Default::default() };
        // the stages count their own batches and jobs (imgsearch_embedder_*, imgsearch_writer_*)
        let id = session.id;
        let jobs = pipeline::open_jobs(self.catalog.clone(), &session);
        let result = pipeline::run(jobs, embedder, writer, options, cancel, |_| {}).await;
        let end = match &result {
            Ok(stats) if stats.interrupted => {
                let how = *stop_as.lock().expect("stop lock");
                match how {
                    StopAs::Pause => self.catalog.transition_session(id, SessionStatus::Paused).await.map(|_| ()),
                    StopAs::Cancel => self.cancel_in_catalog(id).await,
                    StopAs::Detach => Ok(()),
                }
            }
            Ok(_) => coordinator::finish_if_done(&self.catalog, id).await.map(|_| ()).map_err(|e| CatalogError::Database(e.to_string())),
            Err(e) => {
                tracing::error!(session = %id, error = %format!("{e:#}"), "indexing session failed");
                self.catalog.transition_session(id, SessionStatus::Failed).await.map(|_| ())
            }
        };
        if let Err(e) = end {
            tracing::error!(session = %id, error = %e, "cannot record the end of a session");
        }
        self.runs.lock().expect("runs lock").remove(&id);
    }

    async fn cancel_in_catalog(&self, id: i64) -> std::result::Result<(), CatalogError> {
        coordinator::cancel_open_jobs(&self.catalog, id).await.map_err(|e| CatalogError::Database(e.to_string()))?;
        self.catalog.transition_session(id, SessionStatus::Cancelled).await.map(|_| ())
    }

    /// The distributed pause or cancel: the watch stops, the catalog changes, the embedders are told.
    async fn stop_distributed(&self, id: i64, config: &broker::BrokerConfig, cancel: bool) -> Result<()> {
        if let Some(run) = self.take_run(id) {
            run.stop(StopAs::Detach).await;
        }
        let broker = Self::connect_broker(config).await?;
        coordinator::stop_session(&self.catalog, &broker, id, cancel).await?;
        let _ = broker.close().await;
        Ok(())
    }

    /// Pauses a running session once the images in flight are written.
    pub async fn pause(&self, id: i64) -> Result<Session> {
        let session = self.catalog.get_session(id).await?;
        let refuse = || RunnerError::Conflict(format!("cannot pause session {id}: it is {}", session.status));
        if let Some(config) = &self.broker {
            if session.status != SessionStatus::Running {
                return Err(refuse());
            }
            self.stop_distributed(id, config, false).await?;
        } else {
            match self.take_run(id) {
                Some(run) => run.stop(StopAs::Pause).await,
                None if session.status == SessionStatus::Running => {
                    self.catalog.transition_session(id, SessionStatus::Paused).await?;
                }
                None => return Err(refuse()),
            }
        }
        Ok(self.catalog.get_session(id).await?)
    }

    /// Cancels a session that has not finished; its open jobs are cancelled.
    pub async fn cancel(&self, id: i64) -> Result<Session> {
        let session = self.catalog.get_session(id).await?;
        let refuse = || RunnerError::Conflict(format!("cannot cancel session {id}: it is {}", session.status));
        if let Some(config) = &self.broker {
            if session.status.is_terminal() {
                return Err(refuse());
            }
            self.stop_distributed(id, config, true).await?;
        } else {
            match self.take_run(id) {
                Some(run) => run.stop(StopAs::Cancel).await,
                None if !session.status.is_terminal() => self.cancel_in_catalog(id).await?,
                None => return Err(refuse()),
            }
        }
        Ok(self.catalog.get_session(id).await?)
    }

    /// Stops every session running here (pausing it; a distributed one only loses its watch, it
    /// goes on in the workers) and waits until their batches are written.
    pub async fn shutdown(&self) {
        let runs: Vec<Run> = self.runs.lock().expect("runs lock").drain().map(|(_, r)| r).collect();
        for r in runs {
            r.stop(if self.broker.is_some() { StopAs::Detach } else { StopAs::Pause }).await;
        }
    }
}
