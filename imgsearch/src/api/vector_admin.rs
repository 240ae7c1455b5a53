//! `/api/v1/vectors/...`: delete the vectors of an asset, a directory, a session or a category,
//! orphan cleanup, reset, per-directory stats and the deletion log (see `crate::manage`). Broad
//! deletes answer 422 `confirmation_required` without `confirm: true`.

use std::sync::Arc;

use axum::{Json, extract::State};
use catalog::DeletionLog;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiResult, ApiState, crud::PageParams, error::*};
use crate::manage::{self, Cleanup, Deletion, DirectoryStats, Target};

#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Confirm {
    #[serde(default)]
    confirm: bool,
    deletion_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ByAsset {
    /// Only hide the vector from searches (restore it with `POST /vectors/restore/{id}`).
    #[serde(default)]
    soft: bool,
    deletion_reason: Option<String>,
}

/// Deletes one asset's vector; `?soft=true` only hides it from searches.
#[utoipa::path(delete, path = "/api/v1/vectors/by-asset/{id}", params(("id" = Uuid, Path), ByAsset), responses((status = 200, body = Deletion), (status = 404, body = ErrorBody)))]
pub(crate) async fn by_asset(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>, ApiQuery(q): ApiQuery<ByAsset>) -> ApiResult<Json<serde_json::Value>> {
    s.catalog.get_asset(id).await?;
    if q.soft {
        let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &[id], q.deletion_reason, true).await?;
        return Ok(Json(serde_json::json!({"softDeleted": changed})));
    }
    let d = manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, Target::Assets(vec![id]), q.deletion_reason, true).await?;
    Ok(Json(serde_json::to_value(d).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// Makes a soft-deleted vector searchable again.
#[utoipa::path(post, path = "/api/v1/vectors/restore/{id}", params(("id" = Uuid, Path)), responses((status = 200, description = "{restored: n}"), (status = 404, body = ErrorBody)))]
pub(crate) async fn restore(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<serde_json::Value>> {
    s.catalog.get_asset(id).await?;
    let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &[id], None, false).await?;
    if changed == 0 {
        return Err(ApiError::not_found(format!("asset {id} has no vector to restore")));
    }
    Ok(Json(serde_json::json!({"restored": changed})))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ByAssets {
    asset_ids: Vec<Uuid>,
    /// Only hide the vectors from searches.
    #[serde(default)]
    soft: bool,
    deletion_reason: Option<String>,
}

/// Deletes the vectors of a batch of assets (at most 1,000); `soft` only hides them.
#[utoipa::path(delete, path = "/api/v1/vectors/by-assets", request_body = ByAssets, responses((status = 200, body = Deletion), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_assets(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ByAssets>) -> ApiResult<Json<serde_json::Value>> {
    if b.asset_ids.is_empty() || b.asset_ids.len() > 1000 {
        return Err(ApiError::unprocessable(format!("assetIds must hold 1 to 1000 ids, not {}", b.asset_ids.len())));
    }
    if b.soft {
        let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &b.asset_ids, b.deletion_reason, true).await?;
        return Ok(Json(serde_json::json!({"softDeleted": changed})));
    }
    let d = manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, Target::Assets(b.asset_ids), b.deletion_reason, true).await?;
    Ok(Json(serde_json::to_value(d).map_err(|e| ApiError::internal(e.to_string()))?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ByDirectory {
    path_prefix: String,
    #[serde(default)]
    confirm: bool,
    deletion_reason: Option<String>,
}

/// Deletes the vectors of every asset under a directory; needs `confirm: true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-directory", request_body = ByDirectory, responses((status = 200, body = Deletion), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_directory(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ByDirectory>) -> ApiResult<Json<Deletion>> {
    if b.path_prefix.trim().is_empty() || !b.path_prefix.starts_with('/') {
        return Err(ApiError::unprocessable("pathPrefix must be an absolute directory"));
    }
    Ok(Json(manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, Target::Directory(b.path_prefix), b.deletion_reason, b.confirm).await?))
}

/// Deletes the vectors of a session's assets; needs `?confirm=true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-session/{id}", params(("id" = Uuid, Path), Confirm), responses((status = 200, body = Deletion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_session(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>, ApiQuery(c): ApiQuery<Confirm>) -> ApiResult<Json<Deletion>> {
    Ok(Json(manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, Target::Session(id), c.deletion_reason, c.confirm).await?))
}

/// Deletes the vectors of a category's assets; needs `?confirm=true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-category/{id}", params(("id" = i64, Path), Confirm), responses((status = 200, body = Deletion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(c): ApiQuery<Confirm>) -> ApiResult<Json<Deletion>> {
    Ok(Json(manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, Target::Category(id), c.deletion_reason, c.confirm).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CleanupBody {
    #[serde(default)]
    dry_run: bool,
}

/// Orphans both ways: vectors without an asset are deleted; indexed assets without a vector are
/// queued for embedding again. `dryRun` only reports.
#[utoipa::path(post, path = "/api/v1/vectors/cleanup-orphans", request_body = CleanupBody, responses((status = 200, body = Cleanup)))]
pub(crate) async fn cleanup_orphans(State(s): State<Arc<ApiState>>, body: axum::body::Bytes) -> ApiResult<Json<Cleanup>> {
    let b: CleanupBody = if body.is_empty() { CleanupBody::default() } else { serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable(e.to_string()))? };
    Ok(Json(manage::cleanup_orphans(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, b.dry_run).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ResetBody {
    #[serde(default)]
    confirm: bool,
    /// Must be "DELETE ALL VECTORS".
    confirmation_text: Option<String>,
    reason: Option<String>,
}

/// Deletes every vector; needs `confirm: true` and `confirmationText: "DELETE ALL VECTORS"`.
#[utoipa::path(post, path = "/api/v1/vectors/reset", request_body = ResetBody, responses((status = 200, body = Deletion), (status = 422, body = ErrorBody)))]
pub(crate) async fn reset(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ResetBody>) -> ApiResult<Json<Deletion>> {
    Ok(Json(manage::reset(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, b.confirm, b.confirmation_text.as_deref(), b.reason).await?))
}

#[utoipa::path(get, path = "/api/v1/vectors/directories/stats", responses((status = 200, body = Vec<DirectoryStats>)))]
pub(crate) async fn directory_stats(State(s): State<Arc<ApiState>>) -> ApiResult<Json<Vec<DirectoryStats>>> {
    Ok(Json(manage::directory_stats(&s.catalog).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletionLogPage {
    items: Vec<DeletionLog>,
    total: i64,
    page: i64,
    page_size: i64,
}

/// The deletion log, newest first.
#[utoipa::path(get, path = "/api/v1/vectors/deletion-logs", params(PageParams), responses((status = 200, body = DeletionLogPage)))]
pub(crate) async fn deletion_logs(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PageParams>) -> ApiResult<Json<DeletionLogPage>> {
    let page = p.page()?;
    let listing = s.catalog.list_deletion_logs(page).await?;
    Ok(Json(DeletionLogPage { items: listing.items, total: listing.total, page: page.offset / page.limit + 1, page_size: page.limit }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Retrain {
    /// The directory to embed again (inside the allowed roots).
    path_prefix: String,
    /// Only the assets of this category under it.
    category_id: Option<i64>,
}

/// Embeds a directory's assets again through the normal pipeline: they are marked not indexed
/// (their vectors keep serving until replaced) and a new session for the directory is started.
#[utoipa::path(post, path = "/api/v1/vectors/retrain", request_body = Retrain,
    responses((status = 202, body = catalog::Session), (status = 422, body = ErrorBody)))]
pub(crate) async fn retrain(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<Retrain>) -> ApiResult<impl axum::response::IntoResponse> {
    let dir = super::sessions::allowed_dir(&s, &b.path_prefix)?;
    if let Some(c) = b.category_id {
        s.catalog.get_category(c).await?;
    }
    let ids: Vec<Uuid> =
        s.catalog.assets_under(&protocol::paths::to_stored(&dir)).await?.into_iter().filter(|a| b.category_id.is_none() || a.category_id == b.category_id).map(|a| a.id).collect();
    if ids.is_empty() {
        return Err(ApiError::unprocessable(format!("no indexed asset under {}", dir.display())));
    }
    s.catalog.mark_unindexed(&ids).await?;
    let name = format!("retrain {}", dir.display());
    let session = s.catalog.create_session(catalog::NewSession { name, root_path: protocol::paths::to_stored(&dir), category_id: None }).await?;
    super::sessions::start(State(s.clone()), ApiPath(session.id)).await
}

/// The model upgrade of this server: none yet, running, or how the last one ended.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpgradeState {
    /// idle, running, done, failed
    state: String,
    model_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    error: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpgradeBody {
    /// The new model's directory (Immich layout) on the server.
    model_dir: String,
}

/// Starts a model upgrade without downtime: a new collection is built with the new model while
/// searches answer from the current one, then the alias moves atomically; searches then use the
/// new model. The old collection is kept. The embedding runs in this process (also with
/// `serve --config`, into the Qdrant server and PostgreSQL). Poll `GET /api/v1/vectors/upgrade`.
#[utoipa::path(post, path = "/api/v1/vectors/upgrade", request_body = UpgradeBody, responses((status = 202, body = UpgradeState), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn start_upgrade(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<UpgradeBody>) -> ApiResult<(axum::http::StatusCode, Json<UpgradeState>)> {
    {
        let u = s.upgrade.lock().expect("upgrade lock");
        if u.state == "running" {
            return Err(ApiError::conflict("a model upgrade is already running"));
        }
    }
    let dir = std::path::PathBuf::from(&b.model_dir);
    let model = tokio::task::spawn_blocking(move || -> Result<clip::ClipModel, String> {
        let d = clip::ModelDir::open(&dir).map_err(|e| e.to_string())?;
        clip::ClipModel::load(&d, &clip::RuntimeOptions::default()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::unprocessable(format!("cannot load the model in {}: {e}", b.model_dir)))?;
    let model = Arc::new(model);
    let state = UpgradeState { state: "running".into(), model_version: Some(model.version.clone()), result: None, error: None };
    *s.upgrade.lock().expect("upgrade lock") = state.clone();
    // the new model can answer searches from the moment its collection is the alias' target
    s.add_search_model(model.clone());
    let st = s.clone();
    tokio::spawn(async move {
        let outcome = manage::upgrade_model(&st.catalog, &st.vectors, model.clone(), true, Default::default()).await;
        let mut u = st.upgrade.lock().expect("upgrade lock");
        match outcome {
            Ok(up) => {
                if up.swapped {
                    st.set_active(model, up.collection.clone());
                }
                u.state = "done".into();
                u.result = serde_json::to_value(&up).ok();
            }
            Err(e) => {
                u.state = "failed".into();
                u.error = Some(format!("{e:#}"));
            }
        }
    });
    Ok((axum::http::StatusCode::ACCEPTED, Json(state)))
}

#[utoipa::path(get, path = "/api/v1/vectors/upgrade", responses((status = 200, body = UpgradeState)))]
pub(crate) async fn upgrade_status(State(s): State<Arc<ApiState>>) -> Json<UpgradeState> {
    let mut u = s.upgrade.lock().expect("upgrade lock").clone();
    if u.state.is_empty() {
        u.state = "idle".into();
    }
    Json(u)
}
