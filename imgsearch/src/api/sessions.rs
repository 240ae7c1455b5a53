//! `/api/v1/training/...`: sessions (create with their subdirectories, list, get, start, pause,
//! cancel, restart, progress, jobs) and the directories a session can index (scan, listing with
//! training status, preview), in the shapes of the service this replaces. Starting, pausing and
//! cancelling are the session runner's (`crate::sessions`): these handlers only translate HTTP. A
//! state change the session's state does not allow is a 400, as in that service.

use std::{path::PathBuf, sync::Arc};

use axum::{Json, extract::State, http::StatusCode};
use catalog::{NewSession, Session, SessionStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiResult, ApiState,
    crud::jobs_page,
    error::*,
    page::{Paged, page},
    views::{JobView, SessionView},
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateSession {
    name: String,
    /// A directory inside the allowed roots.
    root_path: String,
    category_id: Option<i64>,
    /// Directories directly under `rootPath` to index instead of all of it (the session's roots
    /// become these: images directly in `rootPath` are left out). None or empty: all of it.
    #[serde(default)]
    subdirectories: Vec<String>,
}

/// Creates a pending session for a directory inside the allowed roots, or for some of the
/// directories directly under it.
#[utoipa::path(post, path = "/api/v1/training/sessions", request_body = CreateSession,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CreateSession>) -> ApiResult<Json<SessionView>> {
    if b.name.trim().is_empty() {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    let root = allowed_dir(&s, &b.root_path)?;
    let mut roots = Vec::new();
    for sub in &b.subdirectories {
        let dir = allowed_dir(&s, sub)?;
        if dir.parent() != Some(root.as_path()) {
            return Err(ApiError::bad_request(format!("subdirectory {sub} is not a directory directly under rootPath")));
        }
        roots.push(dir);
    }
    if roots.is_empty() {
        roots.push(root);
    }
    if let Some(c) = b.category_id {
        s.catalog.get_category(c).await?;
    }
    let session = s.catalog.create_session(NewSession { name: b.name, root_path: coordinator::roots_key(&roots), category_id: b.category_id }).await?;
    Ok(Json(SessionView::of(&s.catalog, session).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// pending, running, paused, completed, cancelled, failed
    status: Option<String>,
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
}

/// The sessions, newest first.
#[utoipa::path(get, path = "/api/v1/training/sessions", params(ListParams), responses((status = 200, body = Paged<SessionView>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<ListParams>) -> ApiResult<Json<Paged<SessionView>>> {
    let status = p.status.as_deref().map(|t| t.parse::<SessionStatus>()).transpose().map_err(ApiError::unprocessable)?;
    let page = page(p.page, p.page_size, 20)?;
    let l = s.catalog.list_sessions(status, page).await?;
    let items = SessionView::many(&s.catalog, l.items).await?;
    Ok(Json(Paged::new(catalog::Listing { items, total: l.total }, page, |v| v)))
}

#[utoipa::path(get, path = "/api/v1/training/sessions/{id}", params(("id" = i64, Path)), responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<SessionView>> {
    Ok(Json(SessionView::of(&s.catalog, s.catalog.get_session(id).await?).await?))
}

/// What a state change did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ControlResponse {
    session_id: i64,
    status: SessionStatus,
    message: String,
    /// The session as it is now.
    session: SessionView,
}

async fn control(s: &ApiState, session: Session, message: String) -> ApiResult<Json<ControlResponse>> {
    Ok(Json(ControlResponse { session_id: session.id, status: session.status, message, session: SessionView::of(&s.catalog, session).await? }))
}

/// A state change the session's state does not allow: 400, as in the service this replaces.
fn refused(e: crate::sessions::RunnerError) -> ApiError {
    match e {
        crate::sessions::RunnerError::Conflict(m) => ApiError::bad_request(m),
        crate::sessions::RunnerError::Catalog(catalog::CatalogError::InvalidTransition { .. }) => ApiError::bad_request(e.to_string()),
        other => other.into(),
    }
}

/// Starts (or resumes) a pending or paused session: scans its root and indexes in the background.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/start", params(("id" = i64, Path)),
    responses((status = 200, body = ControlResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn start(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<ControlResponse>> {
    let session = s.sessions.start(id, s.model(), s.collection()).await.map_err(refused)?;
    control(&s, session, format!("Training started for session {id}")).await
}

/// A session indexing in this process cannot be deleted or restarted under its own feet.
fn refuse_if_running(s: &ApiState, id: i64) -> ApiResult<()> {
    if s.sessions.is_running(id) {
        return Err(ApiError::bad_request(format!("session {id} is running; pause or cancel it first")));
    }
    Ok(())
}

/// Pauses a running session once the images in flight are written.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/pause", params(("id" = i64, Path)),
    responses((status = 200, body = ControlResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn pause(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<ControlResponse>> {
    let session = s.sessions.pause(id).await.map_err(refused)?;
    control(&s, session, format!("Training paused for session {id}")).await
}

/// Cancels a session that has not finished; its open jobs are cancelled.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 200, body = ControlResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn cancel(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<ControlResponse>> {
    let session = s.sessions.cancel(id).await.map_err(refused)?;
    control(&s, session, format!("Training cancelled for session {id}")).await
}

/// Progress numbers, as the service reports them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressStats {
    /// Images done (embedded or failed).
    current: i64,
    total: i64,
    /// current / total, 0-100.
    percentage: f64,
    eta_seconds: Option<i64>,
    images_per_minute: Option<f64>,
    /// Always null (the service's face phases fill it).
    unique: Option<i64>,
    /// Always null: nothing is skipped.
    skipped: Option<i64>,
}

impl ProgressStats {
    fn of(x: &Session) -> Self {
        let done = x.processed_images + x.failed_images;
        let percentage = if x.total_images > 0 { (10_000.0 * done as f64 / x.total_images as f64).round() / 100.0 } else { 0.0 };
        let end = if x.status == SessionStatus::Running { Utc::now() } else { x.completed_at.or(x.paused_at).unwrap_or_else(Utc::now) };
        let secs = x.started_at.map(|t| (end - t).num_milliseconds() as f64 / 1e3).unwrap_or(0.0);
        let per_second = (secs > 0.0 && done > 0).then(|| done as f64 / secs);
        let eta = per_second.filter(|_| x.status == SessionStatus::Running).map(|r| ((x.total_images - done).max(0) as f64 / r).ceil() as i64);
        ProgressStats { current: done, total: x.total_images, percentage, eta_seconds: eta, images_per_minute: per_second.map(|r| r * 60.0), unique: None, skipped: None }
    }

    fn none() -> Self {
        ProgressStats { current: 0, total: 0, percentage: 0.0, eta_seconds: None, images_per_minute: None, unique: None, skipped: None }
    }
}

/// A session's jobs by status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobsSummary {
    pending: i64,
    /// Published to the embedders, not yet done.
    queued: i64,
    running: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    /// Always 0.
    skipped: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    session_id: i64,
    status: SessionStatus,
    progress: ProgressStats,
    jobs_summary: JobsSummary,
    total_images: i64,
    processed_images: i64,
    failed_images: i64,
}

#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/progress", params(("id" = i64, Path)), responses((status = 200, body = Progress), (status = 404, body = ErrorBody)))]
pub(crate) async fn progress(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Progress>> {
    let x = s.catalog.get_session(id).await?;
    let c = coordinator::job_counts(&s.catalog, id).await.map_err(|e| match e {
        coordinator::CoordinatorError::Catalog(c) => ApiError::from(c),
        other => ApiError::internal(other.to_string()),
    })?;
    let jobs = JobsSummary { pending: c.pending, queued: c.queued, running: c.running, completed: c.completed, failed: c.failed, cancelled: c.cancelled, skipped: 0 };
    Ok(Json(Progress {
        session_id: id,
        status: x.status,
        progress: ProgressStats::of(&x),
        jobs_summary: jobs,
        total_images: x.total_images,
        processed_images: x.processed_images,
        failed_images: x.failed_images,
    }))
}

/// One phase of a session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PhaseProgress {
    /// training, face_detection, clustering
    name: &'static str,
    /// The session's status for `training`; `skipped` for the face phases, which this server
    /// does not have.
    status: String,
    progress: ProgressStats,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl PhaseProgress {
    fn skipped(name: &'static str) -> Self {
        PhaseProgress { name, status: "skipped".into(), progress: ProgressStats::none(), started_at: None, completed_at: None }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Phases {
    training: PhaseProgress,
    #[serde(rename = "faceDetection")]
    face_detection: PhaseProgress,
    /// The same as `faceDetection` (the service's web UI reads this name).
    #[serde(rename = "face_detection")]
    face_detection_alias: PhaseProgress,
    clustering: PhaseProgress,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OverallProgress {
    percentage: f64,
    eta_seconds: Option<i64>,
    /// training, or completed
    current_phase: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnifiedProgress {
    session_id: i64,
    /// The session's status.
    overall_status: SessionStatus,
    overall_progress: OverallProgress,
    phases: Phases,
}

/// Progress over the service's three phases: only `training` exists here (the face phases are
/// `skipped`), so the overall progress is the training's.
#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/progress-unified", params(("id" = i64, Path)), responses((status = 200, body = UnifiedProgress), (status = 404, body = ErrorBody)))]
pub(crate) async fn progress_unified(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<UnifiedProgress>> {
    let x = s.catalog.get_session(id).await?;
    let training = ProgressStats::of(&x);
    let overall = OverallProgress {
        percentage: training.percentage,
        eta_seconds: training.eta_seconds,
        current_phase: if x.status == SessionStatus::Completed { "completed" } else { "training" },
    };
    Ok(Json(UnifiedProgress {
        session_id: id,
        overall_status: x.status,
        overall_progress: overall,
        phases: Phases {
            training: PhaseProgress { name: "training", status: x.status.to_string(), progress: training, started_at: x.started_at, completed_at: x.completed_at },
            face_detection: PhaseProgress::skipped("face_detection"),
            face_detection_alias: PhaseProgress::skipped("face_detection"),
            clustering: PhaseProgress::skipped("clustering"),
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionJobParams {
    /// pending, queued, running, completed, failed, cancelled
    status: Option<String>,
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
}

/// A session's jobs, a page at a time.
#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/jobs", params(("id" = i64, Path), SessionJobParams),
    responses((status = 200, body = Paged<JobView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn jobs(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(p): ApiQuery<SessionJobParams>) -> ApiResult<Json<Paged<JobView>>> {
    Ok(Json(jobs_page(&s, id, p.status.as_deref(), p.page, p.page_size).await?))
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
#[utoipa::path(patch, path = "/api/v1/training/sessions/{id}", params(("id" = i64, Path)), request_body = PatchSession,
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn patch(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiJson(b): ApiJson<PatchSession>) -> ApiResult<Json<Session>> {
    if b.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    if let Some(Some(c)) = b.category_id {
        s.catalog.get_category(c).await.map_err(|e| match e {
            catalog::CatalogError::NotFound { .. } => ApiError::unprocessable(format!("no category {c}")),
            other => other.into(),
        })?;
    }
    Ok(Json(s.catalog.update_session(id, b.name.as_deref(), b.category_id).await?))
}

/// Deletes a session that is not running, with its jobs and evidence (images and vectors stay).
#[utoipa::path(delete, path = "/api/v1/training/sessions/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    refuse_if_running(&s, id)?;
    s.catalog.delete_session(id).await.map_err(bad_transition)?;
    Ok(StatusCode::NO_CONTENT)
}

fn bad_transition(e: catalog::CatalogError) -> ApiError {
    match e {
        catalog::CatalogError::InvalidTransition { .. } => ApiError::bad_request(e.to_string()),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RestartParams {
    /// Only the images whose job failed (default true); false: every image of the session.
    failed_only: Option<bool>,
    /// Recorded with the session (`resetReason`).
    reason: Option<String>,
}

/// What a restart cleaned up, under the service's names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CleanupStats {
    operation: &'static str,
    session_id: i64,
    /// Images whose last result (evidence) is dropped: those embedded again.
    items_deleted: i64,
    /// Images that will be embedded again.
    items_reset: i64,
    /// Images whose result is kept.
    items_preserved: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RestartResponse {
    session_id: i64,
    status: SessionStatus,
    message: String,
    cleanup_stats: CleanupStats,
    /// The same as `cleanupStats` (the service's web UI reads this name).
    #[serde(rename = "cleanup_stats")]
    cleanup_stats_alias: CleanupStats,
    session: SessionView,
}

/// Puts a paused or finished session back to pending, to embed its failed images (`failed_only`,
/// the default) or all of them again when it is started. Also at `.../restart`.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/restart-training", params(("id" = i64, Path), RestartParams),
    responses((status = 200, body = RestartResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn restart(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(p): ApiQuery<RestartParams>) -> ApiResult<Json<RestartResponse>> {
    refuse_if_running(&s, id)?;
    let failed_only = p.failed_only.unwrap_or(true);
    let (session, again) = s.catalog.restart_session(id, p.reason.as_deref(), failed_only).await.map_err(bad_transition)?;
    let stats = CleanupStats { operation: "training_restart", session_id: id, items_deleted: again, items_reset: again, items_preserved: session.processed_images };
    let message = format!("Training restart initiated ({})", if failed_only { "failed jobs only" } else { "full restart" });
    Ok(Json(RestartResponse {
        session_id: id,
        status: session.status,
        message,
        cleanup_stats_alias: stats.clone(),
        cleanup_stats: stats,
        session: SessionView::of(&s.catalog, session).await?,
    }))
}

/// The directories under the session's root and whether each is indexed (all, until changed).
#[utoipa::path(get, path = "/api/v1/training/sessions/{id}/subdirectories", params(("id" = i64, Path)),
    responses((status = 200, body = [catalog::Subdirectory]), (status = 404, body = ErrorBody)))]
pub(crate) async fn subdirectories(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Vec<catalog::Subdirectory>>> {
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
#[utoipa::path(patch, path = "/api/v1/training/sessions/{id}/subdirectories", params(("id" = i64, Path)), request_body = PatchSubdirectories,
    responses((status = 200, body = [catalog::Subdirectory]), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn select_subdirectories(
    State(s): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
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
    /// A directory inside the allowed roots.
    root_path: String,
    /// Count the images below each subdirectory too (default true); false: only those directly in it.
    recursive: Option<bool>,
}

/// A directory under a root, as the session pages show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DirectoryInfo {
    path: String,
    name: String,
    image_count: i64,
    selected: bool,
    /// Images under it with a vector (with `include_training_status`).
    trained_count: Option<i64>,
    last_trained_at: Option<DateTime<Utc>>,
    /// never, partial, complete, in_progress (with `include_training_status`).
    training_status: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScanAnswer {
    root_path: String,
    subdirectories: Vec<DirectoryInfo>,
    total_subdirectories: usize,
    /// Images in the subdirectories and directly in the root.
    total_images: i64,
    /// Images directly in the root.
    root_image_count: i64,
    /// Files passed over, by reason (`not_an_image`, `not_a_regular_file`, `unreadable`).
    #[schema(value_type = Object)]
    skipped: std::collections::BTreeMap<&'static str, usize>,
}

/// Whether `path` is `dir` or lies below it (both in the stored form).
fn inside(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

async fn directories_under(s: &ApiState, root: PathBuf, recursive: bool, with_status: bool) -> ApiResult<(Vec<DirectoryInfo>, ingest::DirectoryScan)> {
    let mut scan = tokio::task::spawn_blocking(move || ingest::subdirectories(&root, recursive))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let running: Vec<String> = if with_status {
        let sessions = s.catalog.list_sessions(Some(SessionStatus::Running), catalog::Page::new(0, 1000)).await?.items;
        sessions.iter().flat_map(|x| x.root_path.lines().map(str::to_owned)).collect()
    } else {
        Vec::new()
    };
    let mut dirs = Vec::with_capacity(scan.directories.len());
    for d in std::mem::take(&mut scan.directories) {
        let (trained_count, last_trained_at, training_status) = if with_status {
            let (trained, last) = s.catalog.indexed_under(&d.path).await?;
            let status = if running.iter().any(|r| inside(&d.path, r) || inside(r, &d.path)) {
                "in_progress"
            } else if trained == 0 {
                "never"
            } else if trained >= d.image_count {
                "complete"
            } else {
                "partial"
            };
            (Some(trained), last, Some(status))
        } else {
            (None, None, None)
        };
        dirs.push(DirectoryInfo { path: d.path, name: d.name, image_count: d.image_count, selected: false, trained_count, last_trained_at, training_status });
    }
    Ok((dirs, scan))
}

/// The directories directly under a root (inside the allowed roots) with their image counts,
/// before a session is created.
#[utoipa::path(post, path = "/api/v1/training/directories/scan", request_body = ScanBody,
    responses((status = 200, body = ScanAnswer), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn scan_directories(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ScanBody>) -> ApiResult<Json<ScanAnswer>> {
    let root = allowed_dir(&s, &b.root_path)?;
    let (subdirectories, scan) = directories_under(&s, root.clone(), b.recursive.unwrap_or(true), false).await?;
    let total_images = scan.root_image_count + subdirectories.iter().map(|d| d.image_count).sum::<i64>();
    Ok(Json(ScanAnswer {
        root_path: protocol::paths::to_stored(&root),
        total_subdirectories: subdirectories.len(),
        subdirectories,
        total_images,
        root_image_count: scan.root_image_count,
        skipped: scan.skipped,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DirectoriesParams {
    /// A directory inside the allowed roots.
    path: String,
    /// Add how much of each is indexed (default false).
    include_training_status: Option<bool>,
    /// Nothing is ignored here: accepted for the service's clients, changes nothing.
    include_ignored: Option<bool>,
}

/// The directories directly under `path`, with their image counts (below them, recursively) and,
/// on request, how much of each is indexed.
#[utoipa::path(get, path = "/api/v1/training/directories", params(DirectoriesParams),
    responses((status = 200, body = Vec<DirectoryInfo>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn directories(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<DirectoriesParams>) -> ApiResult<Json<Vec<DirectoryInfo>>> {
    let _ = p.include_ignored;
    let root = allowed_dir(&s, &p.path)?;
    Ok(Json(directories_under(&s, root, true, p.include_training_status.unwrap_or(false)).await?.0))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PreviewParams {
    /// A directory inside the allowed roots.
    path: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewImage {
    filename: String,
    full_path: String,
    size_bytes: u64,
    modified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Preview {
    directory: String,
    image_count: usize,
    images: Vec<PreviewImage>,
}

/// The images directly in a directory (not below it), for a look before indexing it.
#[utoipa::path(get, path = "/api/v1/training/directories/preview", params(PreviewParams),
    responses((status = 200, body = Preview), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn preview(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PreviewParams>) -> ApiResult<Json<Preview>> {
    let dir = allowed_dir(&s, &p.path)?;
    let listed = dir.clone();
    let found =
        tokio::task::spawn_blocking(move || ingest::images_in(&listed)).await.map_err(|e| ApiError::internal(e.to_string()))?.map_err(|e| ApiError::bad_request(e.to_string()))?;
    let images: Vec<PreviewImage> = found
        .into_iter()
        .map(|f| PreviewImage {
            filename: f.path.file_name().map(|n| protocol::paths::to_stored(std::path::Path::new(n))).unwrap_or_default(),
            full_path: protocol::paths::to_stored(&f.path),
            size_bytes: f.size,
            modified_at: f.modified,
        })
        .collect();
    Ok(Json(Preview { directory: protocol::paths::to_stored(&dir), image_count: images.len(), images }))
}

/// A path that exists, is a directory and lies inside the allowed roots, canonical.
pub(crate) fn allowed_dir(s: &ApiState, path: &str) -> ApiResult<PathBuf> {
    // paths come back to the API as they were given out: in the stored (lossless) form
    let canonical = protocol::paths::from_stored(path).canonicalize().map_err(|_| ApiError::bad_request(format!("path {path} does not exist")))?;
    if !canonical.is_dir() {
        return Err(ApiError::bad_request(format!("path {path} is not a directory")));
    }
    if !s.allowed_roots.iter().any(|a| canonical.starts_with(a)) {
        return Err(ApiError::bad_request(format!("path {path} is outside the allowed roots (imgsearch serve --allow-root DIR)")));
    }
    Ok(canonical)
}

/// A field that may be absent (`None`: leave it), null (`Some(None)`: clear it) or a value.
fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}
