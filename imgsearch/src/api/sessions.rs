//! `/api/v1/training/sessions`: create (root validated), list, get, start, pause, cancel, progress.
//! A started session runs the embedded pipeline in this process, or, in the distributed wiring
//! (`serve --config`), has its jobs published to RabbitMQ for the embedder and writer processes
//! while this process keeps its progress; pause and cancel then reach the embedders as controls.
//! Only valid transitions are accepted (409 otherwise).

use std::{path::PathBuf, sync::Arc};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use catalog::{NewSession, Session, SessionStatus};
use chrono::Utc;
use embedder::Embedder;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use writer::Writer;

use super::{ApiResult, ApiState, crud::PageParams, error::*};
use crate::pipeline::{self, PipelineOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAs {
    Pause,
    Cancel,
    /// Stop watching; the session goes on elsewhere (the distributed workers).
    Detach,
}

/// A session running in this process.
pub(crate) struct Run {
    cancel: CancellationToken,
    stop_as: Arc<std::sync::Mutex<StopAs>>,
    task: JoinHandle<()>,
}

impl Run {
    /// Stops the feed; the batches in flight are written; the session ends paused or cancelled.
    pub(crate) async fn stop(self, how: StopAs) {
        *self.stop_as.lock().expect("stop lock") = how;
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateSession {
    name: String,
    root_path: String,
    category_id: Option<i64>,
}

/// Creates a pending session for a directory inside the allowed roots.
#[utoipa::path(post, path = "/api/v1/training/sessions", request_body = CreateSession,
    responses((status = 201, body = Session), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CreateSession>) -> ApiResult<impl IntoResponse> {
    if b.name.trim().is_empty() {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    let canonical = allowed_dir(&s, &b.root_path)?;
    if let Some(c) = b.category_id {
        s.catalog.get_category(c).await?;
    }
    let session = s.catalog.create_session(NewSession { name: b.name, root_path: protocol::paths::to_stored(&canonical), category_id: b.category_id }).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListParams {
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionPage {
    items: Vec<Session>,
    total: i64,
}

#[utoipa::path(get, path = "/api/v1/training/sessions", params(ListParams), responses((status = 200, body = SessionPage)))]
pub(crate) async fn list(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<ListParams>) -> ApiResult<Json<SessionPage>> {
    let status = p.status.as_deref().map(|t| t.parse::<SessionStatus>()).transpose().map_err(ApiError::unprocessable)?;
    let page = PageParams { page: p.page, page_size: p.page_size }.page()?;
    let l = s.catalog.list_sessions(status, page).await?;
    Ok(Json(SessionPage { items: l.items, total: l.total }))
}

#[utoipa::path(get, path = "/api/v1/training/sessions/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Session>> {
    Ok(Json(s.catalog.get_session(id).await?))
}

/// Starts (or resumes) a pending or paused session: scans its root and indexes in the background.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/start", params(("id" = Uuid, Path)),
    responses((status = 202, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn start(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<impl IntoResponse> {
    let session = s.catalog.get_session(id).await?;
    if !matches!(session.status, SessionStatus::Pending | SessionStatus::Paused) || s.runs.lock().expect("runs lock").contains_key(&id) {
        return Err(ApiError::conflict(format!("cannot start session {id}: it is {}", session.status)));
    }
    if let Some(config) = s.broker.clone() {
        return start_distributed(&s, session, config).await.map(|x| (StatusCode::ACCEPTED, Json(x)));
    }
    let roots: Vec<PathBuf> = session.root_path.lines().map(protocol::paths::from_stored).collect();
    let prepared = coordinator::prepare_session(&s.catalog, session, &roots, false, false).await.map_err(|e| match e {
        coordinator::CoordinatorError::Catalog(c) => ApiError::from(c),
        other => ApiError::unprocessable(other.to_string()),
    })?;
    crate::manage::forget_missing(&s.catalog, &s.vectors, &s.collection(), &prepared.scan.missing).await?;
    let jobs = coordinator::open_jobs(&s.catalog, &prepared.session).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let cancel = CancellationToken::new();
    let stop_as = Arc::new(std::sync::Mutex::new(StopAs::Pause));
    let task = tokio::spawn(run_session(s.clone(), id, jobs, cancel.clone(), stop_as.clone()));
    s.runs.lock().expect("runs lock").insert(id, Run { cancel, stop_as, task });
    Ok((StatusCode::ACCEPTED, Json(prepared.session)))
}

fn coordinator_error(e: coordinator::CoordinatorError) -> ApiError {
    match e {
        coordinator::CoordinatorError::Catalog(c) => ApiError::from(c),
        coordinator::CoordinatorError::Broker(b) if b.is_connection_lost() => ApiError::unavailable(b.to_string()),
        other => ApiError::unprocessable(other.to_string()),
    }
}

async fn connect_broker(config: &broker::BrokerConfig) -> ApiResult<broker::Broker> {
    broker::Broker::connect(config.clone()).await.map_err(|e| ApiError::unavailable(e.to_string()))
}

/// The distributed start: a paused session is resumed (its dropped jobs published again), a new
/// one scanned and its jobs published; a watch task here completes it once every job is done.
async fn start_distributed(s: &Arc<ApiState>, session: Session, config: broker::BrokerConfig) -> ApiResult<Session> {
    let id = session.id;
    let broker = connect_broker(&config).await?;
    let session = if session.status == SessionStatus::Paused {
        coordinator::resume_session(&s.catalog, &broker, id).await.map_err(coordinator_error)?.0
    } else {
        let roots: Vec<PathBuf> = session.root_path.lines().map(protocol::paths::from_stored).collect();
        let prepared = coordinator::prepare_session(&s.catalog, session, &roots, false, false).await.map_err(coordinator_error)?;
        crate::manage::forget_missing(&s.catalog, &s.vectors, &s.collection(), &prepared.scan.missing).await?;
        coordinator::publish_pending(&s.catalog, &broker, &prepared.session).await.map_err(coordinator_error)?;
        prepared.session
    };
    let _ = broker.close().await;
    let cancel = CancellationToken::new();
    let stop_as = Arc::new(std::sync::Mutex::new(StopAs::Detach));
    let (state, token) = (s.clone(), cancel.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = coordinator::watch(&state.catalog, id, std::time::Duration::from_secs(1), &token, |_| {}).await {
            tracing::error!(session = %id, error = %e, "cannot keep the session's progress");
        }
        state.runs.lock().expect("runs lock").remove(&id);
    });
    s.runs.lock().expect("runs lock").insert(id, Run { cancel, stop_as, task });
    Ok(session)
}

/// The distributed pause or cancel: the watch stops, the catalog changes, the embedders are told.
async fn stop_distributed(s: &ApiState, id: Uuid, config: &broker::BrokerConfig, cancel: bool) -> ApiResult<()> {
    if let Some(run) = take_run(s, id) {
        run.stop(StopAs::Detach).await;
    }
    let broker = connect_broker(config).await?;
    coordinator::stop_session(&s.catalog, &broker, id, cancel).await.map_err(coordinator_error)?;
    let _ = broker.close().await;
    Ok(())
}

async fn run_session(s: Arc<ApiState>, id: Uuid, jobs: Vec<protocol::EmbedJob>, cancel: CancellationToken, stop_as: Arc<std::sync::Mutex<StopAs>>) {
    let (model, collection) = (s.model(), s.collection());
    let embedder = Arc::new(Embedder::new(model.clone(), 0, false));
    let writer = Arc::new(Writer { catalog: s.catalog.clone(), vectors: s.vectors.clone(), collection });
    let options = PipelineOptions { overlap_decode: model.image_device() != "cpu", ..Default::default() };
    // the stages count their own batches and jobs (imgsearch_embedder_*, imgsearch_writer_*)
    let result = pipeline::run(jobs, embedder, writer, options, cancel, |_| {}).await;
    let end = match &result {
        Ok(stats) => {
            if stats.interrupted {
                let how = *stop_as.lock().expect("stop lock");
                match how {
                    StopAs::Pause => s.catalog.transition_session(id, SessionStatus::Paused).await.map(|_| ()),
                    StopAs::Cancel => cancel_session(&s, id).await,
                    StopAs::Detach => Ok(()),
                }
            } else {
                coordinator::finish_if_done(&s.catalog, id).await.map(|_| ()).map_err(|e| catalog::CatalogError::Database(e.to_string()))
            }
        }
        Err(e) => {
            tracing::error!(session = %id, error = %format!("{e:#}"), "indexing session failed");
            s.catalog.transition_session(id, SessionStatus::Failed).await.map(|_| ())
        }
    };
    if let Err(e) = end {
        tracing::error!(session = %id, error = %e, "cannot record the end of a session");
    }
    s.runs.lock().expect("runs lock").remove(&id);
}

async fn cancel_session(s: &ApiState, id: Uuid) -> Result<(), catalog::CatalogError> {
    coordinator::cancel_open_jobs(&s.catalog, id).await.map_err(|e| catalog::CatalogError::Database(e.to_string()))?;
    s.catalog.transition_session(id, SessionStatus::Cancelled).await.map(|_| ())
}

/// A session indexing in this process cannot be deleted or restarted under its own feet.
fn refuse_if_running(s: &ApiState, id: Uuid) -> ApiResult<()> {
    if s.runs.lock().expect("runs lock").contains_key(&id) {
        return Err(ApiError::conflict(format!("session {id} is running; pause or cancel it first")));
    }
    Ok(())
}

fn take_run(s: &ApiState, id: Uuid) -> Option<Run> {
    s.runs.lock().expect("runs lock").remove(&id)
}

/// Pauses a running session once the images in flight are written.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/pause", params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub(crate) async fn pause(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Session>> {
    let session = s.catalog.get_session(id).await?;
    if let Some(config) = &s.broker {
        if session.status != SessionStatus::Running {
            return Err(ApiError::conflict(format!("cannot pause session {id}: it is {}", session.status)));
        }
        stop_distributed(&s, id, config, false).await?;
        return Ok(Json(s.catalog.get_session(id).await?));
    }
    match take_run(&s, id) {
        Some(run) => run.stop(StopAs::Pause).await,
        None if session.status == SessionStatus::Running => {
            s.catalog.transition_session(id, SessionStatus::Paused).await?;
        }
        None => return Err(ApiError::conflict(format!("cannot pause session {id}: it is {}", session.status))),
    }
    Ok(Json(s.catalog.get_session(id).await?))
}

/// Cancels a session that has not finished; its open jobs are cancelled.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/cancel", params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Session>> {
    let session = s.catalog.get_session(id).await?;
    if let Some(config) = &s.broker {
        if session.status.is_terminal() {
            return Err(ApiError::conflict(format!("cannot cancel session {id}: it is {}", session.status)));
        }
        stop_distributed(&s, id, config, true).await?;
        return Ok(Json(s.catalog.get_session(id).await?));
    }
    match take_run(&s, id) {
        Some(run) => run.stop(StopAs::Cancel).await,
        None if !session.status.is_terminal() => cancel_session(&s, id).await?,
        None => return Err(ApiError::conflict(format!("cannot cancel session {id}: it is {}", session.status))),
    }
    Ok(Json(s.catalog.get_session(id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    session_id: Uuid,
    status: SessionStatus,
    total_images: i64,
    processed_images: i64,
    failed_images: i64,
    /// (processed + failed) / total, 0-100.
    percentage: f64,
    images_per_second: f64,
    eta_seconds: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/progress", params(("id" = Uuid, Path)), responses((status = 200, body = Progress), (status = 404, body = ErrorBody)))]
pub(crate) async fn progress(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Progress>> {
    let x = s.catalog.get_session(id).await?;
    let done = x.processed_images + x.failed_images;
    let percentage = if x.total_images > 0 { 100.0 * done as f64 / x.total_images as f64 } else { 0.0 };
    let end = if x.status == SessionStatus::Running { Utc::now() } else { x.completed_at.or(x.paused_at).unwrap_or_else(Utc::now) };
    let secs = x.started_at.map(|t| (end - t).num_milliseconds() as f64 / 1e3).unwrap_or(0.0);
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = (x.status == SessionStatus::Running && rate > 0.0).then(|| (x.total_images - done).max(0) as f64 / rate);
    Ok(Json(Progress {
        session_id: id,
        status: x.status,
        total_images: x.total_images,
        processed_images: x.processed_images,
        failed_images: x.failed_images,
        percentage,
        images_per_second: rate,
        eta_seconds: eta,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchSession {
    name: Option<String>,
    /// A category id, or null to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    category_id: Option<Option<i64>>,
}

/// Renames a session or changes its category.
#[utoipa::path(patch, path = "/api/v1/training/sessions/{id}", params(("id" = Uuid, Path)), request_body = PatchSession,
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn patch(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>, ApiJson(b): ApiJson<PatchSession>) -> ApiResult<Json<Session>> {
    if b.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    if let Some(Some(c)) = b.category_id {
        s.catalog.get_category(c).await.map_err(|_| ApiError::unprocessable(format!("no category {c}")))?;
    }
    Ok(Json(s.catalog.update_session(id, b.name.as_deref(), b.category_id).await?))
}

/// Deletes a session that is not running, with its jobs and evidence (images and vectors stay).
#[utoipa::path(delete, path = "/api/v1/training/sessions/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    refuse_if_running(&s, id)?;
    s.catalog.delete_session(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RestartBody {
    reason: Option<String>,
}

/// Puts a paused or finished session back to pending, to embed all its images again on start.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/restart", params(("id" = Uuid, Path)), request_body = RestartBody,
    responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub(crate) async fn restart(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>, body: axum::body::Bytes) -> ApiResult<Json<Session>> {
    refuse_if_running(&s, id)?;
    // the body is optional: none, or {"reason": "..."}
    let reason = if body.is_empty() { None } else { serde_json::from_slice::<RestartBody>(&body).map_err(|e| ApiError::unprocessable(format!("restart body: {e}")))?.reason };
    Ok(Json(s.catalog.restart_session(id, reason.as_deref()).await?))
}

/// The directories under the session's root and whether each is indexed (all, until changed).
#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/subdirectories", params(("id" = Uuid, Path)),
    responses((status = 200, body = [catalog::Subdirectory]), (status = 404, body = ErrorBody)))]
pub(crate) async fn subdirectories(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Vec<catalog::Subdirectory>>> {
    let session = s.catalog.get_session(id).await?;
    let dirs = coordinator::subdirectories(&s.catalog, &session).await.map_err(|e| match e {
        coordinator::CoordinatorError::Catalog(c) => ApiError::from(c),
        other => ApiError::unprocessable(other.to_string()),
    })?;
    Ok(Json(dirs))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Selection {
    path: String,
    selected: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchSubdirectories {
    selections: Vec<Selection>,
}

/// Selects or deselects subdirectories of a session that is not running.
#[utoipa::path(patch, path = "/api/v1/training/sessions/{id}/subdirectories", params(("id" = Uuid, Path)), request_body = PatchSubdirectories,
    responses((status = 200, body = [catalog::Subdirectory]), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn select_subdirectories(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(b): ApiJson<PatchSubdirectories>,
) -> ApiResult<Json<Vec<catalog::Subdirectory>>> {
    let session = s.catalog.get_session(id).await?;
    if session.status == SessionStatus::Running {
        return Err(ApiError::conflict(format!("session {id} is running; pause it to change what it indexes")));
    }
    if s.catalog.list_subdirectories(id).await?.is_empty() {
        coordinator::subdirectories(&s.catalog, &session).await.map_err(|e| ApiError::internal(e.to_string()))?;
    }
    for sel in &b.selections {
        s.catalog.set_subdirectory_selected(id, &sel.path, sel.selected).await?;
    }
    Ok(Json(s.catalog.list_subdirectories(id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ScanBody {
    root_path: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScanAnswer {
    root_path: String,
    /// Images directly in the root.
    root_image_count: i64,
    #[schema(value_type = Vec<Object>)]
    directories: Vec<ingest::DirectoryCount>,
    /// Files passed over, by reason (`not_an_image`, `not_a_regular_file`, `unreadable`).
    #[schema(value_type = Object)]
    skipped: std::collections::BTreeMap<&'static str, usize>,
}

/// The directories under a root (inside the allowed roots) with their image counts, before a
/// session is created.
#[utoipa::path(post, path = "/api/v1/training/directories/scan", request_body = ScanBody,
    responses((status = 200, body = ScanAnswer), (status = 422, body = ErrorBody)))]
pub(crate) async fn scan_directories(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ScanBody>) -> ApiResult<Json<ScanAnswer>> {
    let root = allowed_dir(&s, &b.root_path)?;
    let scan = tokio::task::spawn_blocking(move || ingest::subdirectories(&root))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(Json(ScanAnswer { root_path: b.root_path, root_image_count: scan.root_image_count, directories: scan.directories, skipped: scan.skipped }))
}

/// A path that exists, is a directory and lies inside the allowed roots, canonical.
pub(crate) fn allowed_dir(s: &ApiState, path: &str) -> ApiResult<PathBuf> {
    let canonical = PathBuf::from(path).canonicalize().map_err(|_| ApiError::unprocessable(format!("rootPath {path} does not exist")))?;
    if !canonical.is_dir() {
        return Err(ApiError::unprocessable(format!("rootPath {path} is not a directory")));
    }
    if !s.allowed_roots.iter().any(|a| a.canonicalize().is_ok_and(|a| canonical.starts_with(a))) {
        return Err(ApiError::unprocessable(format!("rootPath {path} is outside the allowed roots (imgsearch serve --allow-root DIR)")));
    }
    Ok(canonical)
}

/// A field that may be absent (`None`: leave it), null (`Some(None)`: clear it) or a value.
fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}
