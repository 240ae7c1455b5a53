//! `/api/v1/training/sessions`: create (root validated), list, get, start, pause, cancel, progress.
//! Starting, pausing and cancelling are the session runner's (`crate::sessions`): these handlers
//! only translate HTTP. Only valid transitions are accepted (409 otherwise).

use std::{path::PathBuf, sync::Arc};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use catalog::{NewSession, Session, SessionStatus};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiResult, ApiState, crud::PageParams, error::*};

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
    let session = s.sessions.start(id, s.model(), s.collection()).await?;
    Ok((StatusCode::ACCEPTED, Json(session)))
}

/// A session indexing in this process cannot be deleted or restarted under its own feet.
fn refuse_if_running(s: &ApiState, id: Uuid) -> ApiResult<()> {
    if s.sessions.is_running(id) {
        return Err(ApiError::conflict(format!("session {id} is running; pause or cancel it first")));
    }
    Ok(())
}

/// Pauses a running session once the images in flight are written.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/pause", params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub(crate) async fn pause(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Session>> {
    Ok(Json(s.sessions.pause(id).await?))
}

/// Cancels a session that has not finished; its open jobs are cancelled.
#[utoipa::path(post, path = "/api/v1/training/sessions/{id}/cancel", params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Session>> {
    Ok(Json(s.sessions.cancel(id).await?))
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
    // paths come back to the API as they were given out: in the stored (lossless) form
    let canonical = protocol::paths::from_stored(path).canonicalize().map_err(|_| ApiError::unprocessable(format!("rootPath {path} does not exist")))?;
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
