//! `/api/v1/vectors/...`: delete the vectors of an asset, a directory, a session or a category,
//! orphan cleanup, reset, per-directory stats and the deletion log (see `crate::manage`), in the
//! shapes of the service this replaces (`vectorsDeleted`, `message`). Broad deletes answer 400
//! without `confirm: true`, as there.

use std::sync::Arc;

use axum::{Json, extract::State};
use catalog::DeletionLog;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, ApiState, crud::PageParams, error::*, page};
use crate::manage::{self, Cleanup, Deletion, Target};

/// What a delete did: the target under the service's name, how many vectors went, a message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VectorsDeleted {
    #[serde(skip_serializing_if = "Option::is_none")]
    asset_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_prefix: Option<String>,
    vectors_deleted: u64,
    /// Assets marked not indexed (embedded again by the next scan or session).
    assets_updated: u64,
    message: String,
    log: DeletionLog,
}

/// What a soft delete did: the vectors stay, hidden from searches until restored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SoftDeleted {
    #[serde(skip_serializing_if = "Option::is_none")]
    asset_id: Option<i64>,
    /// Vectors now hidden.
    soft_deleted: u64,
    message: String,
}

/// The answer of a delete of assets' vectors: `VectorsDeleted`, or `SoftDeleted` when `soft`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum AssetsDeleted {
    Deleted(Box<VectorsDeleted>),
    Soft(SoftDeleted),
}

/// What a restore did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Restored {
    /// Vectors searchable again.
    restored: u64,
}

impl VectorsDeleted {
    fn of(d: Deletion) -> Self {
        VectorsDeleted {
            asset_id: None,
            session_id: None,
            category_id: None,
            path_prefix: None,
            message: format!("Successfully deleted {} vectors", d.deleted_vectors),
            vectors_deleted: d.deleted_vectors,
            assets_updated: d.assets_updated,
            log: d.log,
        }
    }
}

/// Deletes the vectors of `target` (`crate::manage`), in the service's answer.
async fn delete(s: &ApiState, target: Target, reason: Option<String>, confirm: bool) -> ApiResult<VectorsDeleted> {
    Ok(VectorsDeleted::of(manage::delete_vectors(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, target, reason, confirm).await.map_err(unconfirmed)?))
}

/// A broad delete without `confirm: true` is a 400, as in the service this replaces.
fn unconfirmed(e: manage::ManageError) -> ApiError {
    match e {
        manage::ManageError::ConfirmationRequired(m) => ApiError { status: axum::http::StatusCode::BAD_REQUEST, code: "confirmation_required", message: m },
        other => other.into(),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Confirm {
    /// Must be true.
    confirm: Option<bool>,
    deletion_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ByAsset {
    /// Only hide the vector from searches (restore it with `POST /vectors/restore/{id}`).
    soft: Option<bool>,
    deletion_reason: Option<String>,
}

/// Deletes one asset's vector; `?soft=true` only hides it from searches.
#[utoipa::path(delete, path = "/api/v1/vectors/by-asset/{id}", params(("id" = i64, Path), ByAsset), responses((status = 200, body = AssetsDeleted), (status = 404, body = ErrorBody)))]
pub(crate) async fn by_asset(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(q): ApiQuery<ByAsset>) -> ApiResult<Json<AssetsDeleted>> {
    s.catalog.get_asset(id).await?;
    if q.soft.unwrap_or(false) {
        let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &[id], q.deletion_reason, true).await?;
        return Ok(Json(AssetsDeleted::Soft(SoftDeleted { asset_id: Some(id), soft_deleted: changed, message: format!("Hid {changed} vectors from searches") })));
    }
    let answer = VectorsDeleted { asset_id: Some(id), ..delete(&s, Target::Assets(vec![id]), q.deletion_reason, true).await? };
    Ok(Json(AssetsDeleted::Deleted(Box::new(answer))))
}

/// Makes a soft-deleted vector searchable again.
#[utoipa::path(post, path = "/api/v1/vectors/restore/{id}", params(("id" = i64, Path)), responses((status = 200, body = Restored), (status = 404, body = ErrorBody)))]
pub(crate) async fn restore(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Restored>> {
    s.catalog.get_asset(id).await?;
    let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &[id], None, false).await?;
    if changed == 0 {
        return Err(ApiError::not_found(format!("asset {id} has no vector to restore")));
    }
    Ok(Json(Restored { restored: changed }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ByAssets {
    /// 1 to 1,000 ids.
    #[schema(min_items = 1, max_items = 1000)]
    asset_ids: Vec<i64>,
    /// Only hide the vectors from searches.
    #[serde(default)]
    soft: bool,
    deletion_reason: Option<String>,
}

/// Deletes the vectors of a batch of assets (at most 1,000); `soft` only hides them.
#[utoipa::path(delete, path = "/api/v1/vectors/by-assets", request_body = ByAssets, responses((status = 200, body = AssetsDeleted), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_assets(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ByAssets>) -> ApiResult<Json<AssetsDeleted>> {
    if b.asset_ids.is_empty() || b.asset_ids.len() > 1000 {
        return Err(ApiError::unprocessable(format!("assetIds must hold 1 to 1000 ids, not {}", b.asset_ids.len())));
    }
    if b.soft {
        let changed = manage::soft_delete(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, &b.asset_ids, b.deletion_reason, true).await?;
        return Ok(Json(AssetsDeleted::Soft(SoftDeleted { asset_id: None, soft_deleted: changed, message: format!("Hid {changed} vectors from searches") })));
    }
    Ok(Json(AssetsDeleted::Deleted(Box::new(delete(&s, Target::Assets(b.asset_ids), b.deletion_reason, true).await?))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ByDirectory {
    /// An absolute directory: every asset below it.
    path_prefix: String,
    /// Must be true.
    #[serde(default)]
    confirm: bool,
    deletion_reason: Option<String>,
}

/// Deletes the vectors of every asset under a directory; needs `confirm: true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-directory", request_body = ByDirectory,
    responses((status = 200, body = VectorsDeleted), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn by_directory(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ByDirectory>) -> ApiResult<Json<VectorsDeleted>> {
    if b.path_prefix.trim().is_empty() || !b.path_prefix.starts_with('/') {
        return Err(ApiError::unprocessable("pathPrefix must be an absolute directory"));
    }
    let d = delete(&s, Target::Directory(b.path_prefix.clone()), b.deletion_reason, b.confirm).await?;
    Ok(Json(VectorsDeleted { path_prefix: Some(b.path_prefix), ..d }))
}

/// Deletes the vectors of a session's assets; needs `?confirm=true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-session/{id}", params(("id" = i64, Path), Confirm),
    responses((status = 200, body = VectorsDeleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn by_session(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(c): ApiQuery<Confirm>) -> ApiResult<Json<VectorsDeleted>> {
    let d = delete(&s, Target::Session(id), c.deletion_reason, c.confirm.unwrap_or(false)).await?;
    Ok(Json(VectorsDeleted { session_id: Some(id), ..d }))
}

/// Deletes the vectors of a category's assets; needs `?confirm=true`.
#[utoipa::path(delete, path = "/api/v1/vectors/by-category/{id}", params(("id" = i64, Path), Confirm),
    responses((status = 200, body = VectorsDeleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn by_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiQuery(c): ApiQuery<Confirm>) -> ApiResult<Json<VectorsDeleted>> {
    let d = delete(&s, Target::Category(id), c.deletion_reason, c.confirm.unwrap_or(false)).await?;
    Ok(Json(VectorsDeleted { category_id: Some(id), ..d }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CleanupBody {
    /// Must be true, unless `dryRun`.
    #[serde(default)]
    confirm: bool,
    /// Only report what would be done.
    #[serde(default)]
    dry_run: bool,
    /// Not recorded: an orphan cleanup repairs, it deletes nothing anyone asked for.
    deletion_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CleanupAnswer {
    orphans_deleted: u64,
    /// The same as `orphansDeleted`.
    vectors_deleted: u64,
    message: String,
    #[serde(flatten)]
    cleanup: Cleanup,
}

/// Orphans both ways: vectors without an asset are deleted; indexed assets without a vector are
/// queued for embedding again. Needs `confirm: true`; `dryRun` only reports.
#[utoipa::path(post, path = "/api/v1/vectors/cleanup-orphans", request_body = CleanupBody,
    responses((status = 200, body = CleanupAnswer), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn cleanup_orphans(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CleanupBody>) -> ApiResult<Json<CleanupAnswer>> {
    let _ = b.deletion_reason;
    if !b.confirm && !b.dry_run {
        return Err(unconfirmed(manage::ManageError::ConfirmationRequired("an orphan cleanup deletes vectors; it needs confirm: true (or dryRun: true)".into())));
    }
    let c = manage::cleanup_orphans(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, b.dry_run).await?;
    let deleted = if c.dry_run { 0 } else { c.orphan_vectors };
    let message = if c.dry_run { format!("Would delete {} orphan vectors", c.orphan_vectors) } else { format!("Successfully deleted {deleted} orphan vectors") };
    Ok(Json(CleanupAnswer { orphans_deleted: deleted, vectors_deleted: deleted, message, cleanup: c }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// Must be true.
    #[serde(default)]
    confirm: bool,
    /// Must be "DELETE ALL VECTORS".
    confirmation_text: Option<String>,
    /// Recorded in the deletion log (also accepted as `reason`).
    #[serde(alias = "reason")]
    deletion_reason: Option<String>,
}

/// Deletes every vector; needs `confirm: true` and `confirmationText: "DELETE ALL VECTORS"`.
#[utoipa::path(post, path = "/api/v1/vectors/reset", request_body = ResetBody, responses((status = 200, body = VectorsDeleted), (status = 400, body = ErrorBody)))]
pub(crate) async fn reset(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<ResetBody>) -> ApiResult<Json<VectorsDeleted>> {
    let d = manage::reset(&s.catalog, &s.vectors, vectors::DEFAULT_COLLECTION, b.confirm, b.confirmation_text.as_deref(), b.deletion_reason).await.map_err(unconfirmed)?;
    let message = format!("Successfully deleted {} vectors and reset collection", d.deleted_vectors);
    Ok(Json(VectorsDeleted { message, ..VectorsDeleted::of(d) }))
}

/// The vectors of one directory (the images directly in it).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DirectoryVectors {
    path_prefix: String,
    vector_count: u64,
    /// When the last of them was indexed.
    last_indexed: Option<DateTime<Utc>>,
    /// Images in the catalog there, indexed or not.
    assets: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DirectoryStatsAnswer {
    /// Most vectors first.
    directories: Vec<DirectoryVectors>,
    total_vectors: u64,
}

/// Vectors per directory, most first.
#[utoipa::path(get, path = "/api/v1/vectors/directories/stats", responses((status = 200, body = DirectoryStatsAnswer)))]
pub(crate) async fn directory_stats(State(s): State<Arc<ApiState>>) -> ApiResult<Json<DirectoryStatsAnswer>> {
    let mut directories: Vec<DirectoryVectors> = manage::directory_stats(&s.catalog)
        .await?
        .into_iter()
        .filter(|d| d.indexed > 0)
        .map(|d| DirectoryVectors { path_prefix: d.directory, vector_count: d.indexed, last_indexed: d.last_indexed, assets: d.assets })
        .collect();
    directories.sort_by(|a, b| b.vector_count.cmp(&a.vector_count).then_with(|| a.path_prefix.cmp(&b.path_prefix)));
    let total_vectors = directories.iter().map(|d| d.vector_count).sum();
    Ok(Json(DirectoryStatsAnswer { directories, total_vectors }))
}

/// One deletion, under the service's names.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletionLogView {
    id: i64,
    deletion_type: catalog::DeletionType,
    deletion_target: Option<String>,
    vector_count: i64,
    deletion_reason: Option<String>,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletionLogPage {
    logs: Vec<DeletionLogView>,
    total: i64,
    page: i64,
    page_size: i64,
    has_more: bool,
}

/// The deletion log, newest first.
#[utoipa::path(get, path = "/api/v1/vectors/deletion-logs", params(PageParams), responses((status = 200, body = DeletionLogPage), (status = 422, body = ErrorBody)))]
pub(crate) async fn deletion_logs(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PageParams>) -> ApiResult<Json<DeletionLogPage>> {
    let page = page::page(p.page, p.page_size, 50)?;
    let listed = page::Paged::new(s.catalog.list_deletion_logs(page).await?, page, |l: DeletionLog| DeletionLogView {
        id: l.id,
        deletion_type: l.deletion_type,
        deletion_target: l.target,
        vector_count: l.vector_count,
        deletion_reason: l.reason,
        metadata: l.metadata,
        created_at: l.created_at,
    });
    Ok(Json(DeletionLogPage { logs: listed.items, total: listed.total, page: listed.page, page_size: listed.page_size, has_more: listed.has_more }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Retrain {
    /// The directory to embed again (inside the allowed roots).
    path_prefix: String,
    /// The category of the new session.
    category_id: Option<i64>,
    /// Recorded as the new session's reason.
    deletion_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetrainAnswer {
    path_prefix: String,
    /// Always 0: the old vectors keep answering searches until the new ones replace them.
    vectors_deleted: u64,
    /// Assets marked to be embedded again.
    assets_requeued: u64,
    new_session_id: i64,
    message: String,
    session: super::views::SessionView,
}

/// Embeds a directory's assets again through the normal pipeline: they are marked not indexed
/// (their vectors keep serving until replaced) and a new session for the directory is started.
#[utoipa::path(post, path = "/api/v1/vectors/retrain", request_body = Retrain,
    responses((status = 200, body = RetrainAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn retrain(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<Retrain>) -> ApiResult<Json<RetrainAnswer>> {
    let dir = super::sessions::allowed_dir(&s, &b.path_prefix)?;
    if let Some(c) = b.category_id {
        s.catalog.get_category(c).await?;
    }
    let ids: Vec<i64> = s.catalog.assets_under(&protocol::paths::to_stored(&dir)).await?.into_iter().filter(|a| a.deleted_at.is_none()).map(|a| a.id).collect();
    if ids.is_empty() {
        return Err(ApiError::bad_request(format!("no indexed asset under {}", dir.display())));
    }
    let requeued = s.catalog.mark_unindexed(&ids).await?;
    let name = format!("Retrain: {}", protocol::paths::to_stored(&dir));
    let session = s.catalog.create_session(catalog::NewSession { name, root_path: protocol::paths::to_stored(&dir), category_id: b.category_id }).await?;
    if let Some(reason) = b.deletion_reason {
        tracing::info!(session = session.id, %reason, "retrain");
    }
    let started = s.sessions.start(session.id, s.model(), s.collection()).await?;
    Ok(Json(RetrainAnswer {
        path_prefix: b.path_prefix,
        vectors_deleted: 0,
        assets_requeued: requeued,
        new_session_id: started.id,
        message: format!("Created training session {} to embed {requeued} images again", started.id),
        session: super::views::SessionView::of(&s.catalog, started).await?,
    }))
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
    // only models under the model cache or a --model-root; the answer for any other path is the
    // same, whether it exists or not
    let outside = || ApiError::unprocessable("modelDir must be a model directory in this server's model cache or under one of its --model-root directories");
    let dir = std::path::Path::new(&b.model_dir).canonicalize().map_err(|_| outside())?;
    if !s.model_roots.iter().any(|r| dir.starts_with(r)) {
        return Err(outside());
    }
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
