//! The REST API (`imgsearch serve`): the shape of the system it replaces, camelCase JSON, one error
//! shape, an OpenAPI document generated from these handlers at `/api/v1/openapi.json`.
//!
//! Indexing sessions started through the API run inside this process on the same pipeline as
//! `imgsearch index`; pause and cancel stop the feed and let the batches in flight finish.

mod error;
pub(crate) mod metrics;
mod sessions;
mod thumbnail;
mod vector_admin;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Multipart, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{delete, get, post},
};
use catalog::{Asset, Catalog, Category, CategoryPatch, Evidence, Job, JobStatus, NewCategory, Page};
use chrono::{DateTime, Utc};
use clip::ClipModel;
pub use error::{ApiError, ErrorBody};
use error::{ApiJson, ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;
use vectors::{DEFAULT_COLLECTION, PointFilter, VectorStore};

use crate::search::{DEFAULT_LIMIT, MAX_LIMIT};

type ApiResult<T> = Result<T, ApiError>;

/// Everything a handler needs; cheap to share.
pub struct ApiState {
    pub catalog: Catalog,
    pub vectors: Arc<VectorStore>,
    /// The model indexing embeds with, and the collection it writes to (the alias `image_assets`
    /// points at it); a model upgrade through the API replaces both once the alias moved.
    active: std::sync::RwLock<(Arc<ClipModel>, String)>,
    /// Every model this server can embed queries with: a search uses the one that built the
    /// collection the alias points at, so searches keep answering across an upgrade.
    search_models: std::sync::RwLock<Vec<Arc<ClipModel>>>,
    /// The model upgrade running or last run in this process.
    pub(crate) upgrade: Mutex<vector_admin::UpgradeState>,
    /// Sessions may only index directories under these.
    pub allowed_roots: Vec<PathBuf>,
    /// Sessions running in this process, with the token that stops them.
    pub(crate) runs: Mutex<HashMap<Uuid, sessions::Run>>,
    pub(crate) metrics: metrics::Metrics,
    /// Where thumbnails are cached; none: made on every request.
    pub thumbnail_dir: Option<PathBuf>,
    /// The distributed wiring: sessions are published to this broker for the embedder and writer
    /// processes instead of running in this process. None: the embedded pipeline runs them here.
    pub broker: Option<broker::BrokerConfig>,
}

impl ApiState {
    /// `thumbnail_dir`: where thumbnails are cached (none: made on every request).
    pub fn new(catalog: Catalog, vectors: Arc<VectorStore>, model: Arc<ClipModel>, collection: String, allowed_roots: Vec<PathBuf>, thumbnail_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(ApiState {
            catalog,
            vectors,
            search_models: std::sync::RwLock::new(vec![model.clone()]),
            active: std::sync::RwLock::new((model, collection)),
            upgrade: Mutex::new(Default::default()),
            allowed_roots,
            runs: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::new(),
            thumbnail_dir,
            broker: None,
        })
    }

    /// Like `new`, for the distributed wiring: started sessions go to the broker's jobs queue.
    pub fn distributed(
        catalog: Catalog,
        vectors: Arc<VectorStore>,
        model: Arc<ClipModel>,
        collection: String,
        allowed_roots: Vec<PathBuf>,
        broker: broker::BrokerConfig,
    ) -> Arc<Self> {
        let mut state = Arc::into_inner(Self::new(catalog, vectors, model, collection, allowed_roots, None)).expect("a new state has one owner");
        state.broker = Some(broker);
        Arc::new(state)
    }

    /// The model indexing embeds with.
    pub fn model(&self) -> Arc<ClipModel> {
        self.active.read().expect("active lock").0.clone()
    }

    /// The collection indexing writes to.
    pub fn collection(&self) -> String {
        self.active.read().expect("active lock").1.clone()
    }

    pub(crate) fn set_active(&self, model: Arc<ClipModel>, collection: String) {
        *self.active.write().expect("active lock") = (model, collection);
    }

    /// Lets searches embed queries with this model too (when a collection it built is searched).
    pub fn add_search_model(&self, model: Arc<ClipModel>) {
        let mut models = self.search_models.write().expect("models lock");
        if !models.iter().any(|m| m.version == model.version) {
            models.push(model);
        }
    }

    /// Stops every running session (pausing it) and waits until their batches are written.
    pub async fn shutdown(&self) {
        let runs: Vec<sessions::Run> = self.runs.lock().expect("runs lock").drain().map(|(_, r)| r).collect();
        for r in runs {
            // a distributed session keeps running in the workers; only its watch stops here
            r.stop(if self.broker.is_some() { sessions::StopAs::Detach } else { sessions::StopAs::Pause }).await;
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "image-search", description = "Text-to-image search over CLIP vectors"),
    paths(
        health,
        ready,
        search,
        search_image,
        search_similar,
        list_categories,
        create_category,
        get_category,
        update_category,
        delete_category,
        list_assets,
        get_asset,
        thumbnail::thumbnail,
        list_evidence,
        list_jobs,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::start,
        sessions::pause,
        sessions::cancel,
        sessions::progress,
        sessions::patch,
        sessions::delete,
        sessions::restart,
        sessions::subdirectories,
        sessions::select_subdirectories,
        sessions::scan_directories,
        vector_admin::by_asset,
        vector_admin::by_assets,
        vector_admin::by_directory,
        vector_admin::by_session,
        vector_admin::by_category,
        vector_admin::cleanup_orphans,
        vector_admin::reset,
        vector_admin::start_upgrade,
        vector_admin::upgrade_status,
        vector_admin::restore,
        vector_admin::retrain,
        vector_admin::directory_stats,
        vector_admin::deletion_logs,
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/search", post(search))
        .route("/search/image", post(search_image))
        .route("/search/similar/{asset_id}", get(search_similar))
        .route("/categories", get(list_categories).post(create_category))
        .route("/categories/{id}", get(get_category).patch(update_category).delete(delete_category))
        .route("/assets", get(list_assets))
        .route("/assets/{id}", get(get_asset))
        .route("/assets/{id}/thumbnail", get(thumbnail::thumbnail))
        .route("/evidence", get(list_evidence))
        .route("/jobs", get(list_jobs))
        .route("/training/sessions", get(sessions::list).post(sessions::create))
        .route("/training/sessions/{id}", get(sessions::get).patch(sessions::patch).delete(sessions::delete))
        .route("/training/sessions/{id}/restart", post(sessions::restart))
        .route("/training/sessions/{id}/subdirectories", get(sessions::subdirectories).patch(sessions::select_subdirectories))
        .route("/training/directories/scan", post(sessions::scan_directories))
        .route("/training/sessions/{id}/start", post(sessions::start))
        .route("/training/sessions/{id}/pause", post(sessions::pause))
        .route("/training/sessions/{id}/cancel", post(sessions::cancel))
        .route("/training/sessions/{id}/progress", get(sessions::progress))
        .route("/vectors/by-asset/{id}", delete(vector_admin::by_asset))
        .route("/vectors/by-assets", delete(vector_admin::by_assets))
        .route("/vectors/by-directory", delete(vector_admin::by_directory))
        .route("/vectors/by-session/{id}", delete(vector_admin::by_session))
        .route("/vectors/by-category/{id}", delete(vector_admin::by_category))
        .route("/vectors/cleanup-orphans", post(vector_admin::cleanup_orphans))
        .route("/vectors/reset", post(vector_admin::reset))
        .route("/vectors/upgrade", post(vector_admin::start_upgrade).get(vector_admin::upgrade_status))
        .route("/vectors/restore/{id}", post(vector_admin::restore))
        .route("/vectors/retrain", post(vector_admin::retrain))
        .route("/vectors/directories/stats", get(vector_admin::directory_stats))
        .route("/vectors/deletion-logs", get(vector_admin::deletion_logs))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }));
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(|| async { axum::response::Html(include_str!("web/index.html")) }))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "alive")))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the catalog and the vector store answer.
#[utoipa::path(get, path = "/ready", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
async fn ready(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    s.catalog.ping().await?;
    s.vectors.health().await?;
    Ok(Json(serde_json::json!({"status": "ready", "catalog": s.catalog.backend(), "vectors": s.vectors.backend()})))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SearchFilters {
    from_date: Option<DateTime<Utc>>,
    to_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SearchBody {
    query: String,
    /// 1-100, default 50.
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    category_id: Option<i64>,
    #[serde(default)]
    filters: SearchFilters,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SearchResult {
    asset: Asset,
    score: f32,
    highlights: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SearchResponse {
    results: Vec<SearchResult>,
    /// Results in this page.
    total: usize,
    query: String,
    /// The model that built the collection searched (and embedded the query).
    model_version: Option<String>,
}

fn check_limit(limit: Option<usize>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    Ok(limit)
}

/// The collection the alias points at now and the model that built it (resolved once per request,
/// so an alias swap midway cannot pair one model's query with another model's vectors). None:
/// nothing indexed yet. A collection built by a model this server does not hold is a conflict.
async fn check_model(s: &ApiState) -> ApiResult<Option<(String, Arc<ClipModel>)>> {
    let Some(info) = s.vectors.info(DEFAULT_COLLECTION).await? else { return Ok(None) };
    let built_with = info.model_version.clone().unwrap_or_else(|| "unknown".into());
    let model = s.search_models.read().expect("models lock").iter().find(|m| m.version == built_with).cloned();
    match model {
        Some(m) => Ok(Some((info.name, m))),
        None => Err(ApiError::conflict(crate::search::ModelMismatch { built_with, this: s.model().version.clone() }.to_string())),
    }
}

/// Ranks by the vector, hydrates from the catalog in one query, keeps the ranking.
async fn ranked(s: &ApiState, collection: &str, vector: Vec<f32>, filter: &PointFilter, limit: usize, offset: usize, exclude: Option<Uuid>) -> ApiResult<Vec<SearchResult>> {
    let started = Instant::now();
    let fetch = limit + usize::from(exclude.is_some());
    let hits = s.vectors.search(collection, &vector, filter, fetch, offset).await?;
    let hits: Vec<_> = hits.into_iter().filter(|h| Some(h.asset_id) != exclude).take(limit).collect();
    let found = crate::search::hydrate(&s.catalog, hits).await?;
    s.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
    Ok(found.into_iter().map(|h| SearchResult { asset: h.asset, score: h.score, highlights: Vec::new() }).collect())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, clip::ClipError> + Send + 'static) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(clip::ClipError::Image(e))) => Err(e.into()),
        Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// Text-to-image search.
#[utoipa::path(post, path = "/api/v1/search", request_body = SearchBody,
    responses((status = 200, body = SearchResponse), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn search(State(s): State<Arc<ApiState>>, ApiJson(body): ApiJson<SearchBody>) -> ApiResult<Json<SearchResponse>> {
    let limit = check_limit(body.limit)?;
    if body.query.trim().is_empty() {
        return Err(ApiError::unprocessable("query must not be empty"));
    }
    if let (Some(f), Some(t)) = (body.filters.from_date, body.filters.to_date)
        && f > t
    {
        return Err(ApiError::unprocessable("filters.fromDate is after filters.toDate"));
    }
    let Some((collection, model)) = check_model(&s).await? else {
        return Ok(Json(SearchResponse { results: Vec::new(), total: 0, query: body.query, model_version: None }));
    };
    let model_version = Some(model.version.clone());
    let text = body.query.clone();
    let vector = blocking(move || model.embed_texts(&[text.as_str()]).map(|m| m.row(0).to_vec())).await?;
    let filter = PointFilter { from: body.filters.from_date, to: body.filters.to_date, category_id: body.category_id, path_prefix: None };
    let results = ranked(&s, &collection, vector, &filter, limit, body.offset, None).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: body.query, model_version }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
struct ImageSearchParams {
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    category_id: Option<i64>,
}

/// Image-to-image search: upload an image (multipart field `file`).
#[utoipa::path(post, path = "/api/v1/search/image", params(ImageSearchParams),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody)))]
async fn search_image(State(s): State<Arc<ApiState>>, ApiQuery(params): ApiQuery<ImageSearchParams>, mut form: Multipart) -> ApiResult<Json<SearchResponse>> {
    let limit = check_limit(params.limit)?;
    let mut bytes = None;
    while let Some(field) = form.next_field().await.map_err(|e| ApiError::bad_request(e.body_text()))? {
        if matches!(field.name(), Some("file" | "image")) {
            bytes = Some(field.bytes().await.map_err(|e| ApiError::bad_request(e.body_text()))?);
        }
    }
    let bytes = bytes.ok_or_else(|| ApiError::bad_request("multipart field `file` with the image is missing"))?;
    let Some((collection, model)) = check_model(&s).await? else {
        return Ok(Json(SearchResponse { results: Vec::new(), total: 0, query: "image".into(), model_version: None }));
    };
    let model_version = Some(model.version.clone());
    let vector = blocking(move || {
        let prepared = model.preprocessor().prepare(&bytes)?;
        model.embed_images(std::slice::from_ref(&prepared)).map(|m| m.row(0).to_vec())
    })
    .await?;
    let filter = PointFilter { category_id: params.category_id, ..Default::default() };
    let results = ranked(&s, &collection, vector, &filter, limit, params.offset, None).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: "image".into(), model_version }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
struct SimilarParams {
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    /// Leave the asset itself out (default true).
    exclude_self: Option<bool>,
    category_id: Option<i64>,
}

/// Images similar to an indexed one.
#[utoipa::path(get, path = "/api/v1/search/similar/{asset_id}", params(("asset_id" = Uuid, Path), SimilarParams),
    responses((status = 200, body = SearchResponse), (status = 404, body = ErrorBody)))]
async fn search_similar(State(s): State<Arc<ApiState>>, ApiPath(asset_id): ApiPath<Uuid>, ApiQuery(p): ApiQuery<SimilarParams>) -> ApiResult<Json<SearchResponse>> {
    let limit = check_limit(p.limit)?;
    s.catalog.get_asset(asset_id).await?;
    let Some(info) = s.vectors.info(DEFAULT_COLLECTION).await? else {
        return Err(ApiError::not_found(format!("asset {asset_id} is not indexed yet")));
    };
    let (collection, model_version) = (info.name, info.model_version);
    let stored = s.vectors.retrieve(&collection, &[asset_id], true).await?;
    let Some(vector) = stored.into_iter().next().and_then(|p| p.vector) else {
        return Err(ApiError::not_found(format!("asset {asset_id} is not indexed yet")));
    };
    let filter = PointFilter { category_id: p.category_id, ..Default::default() };
    let exclude = p.exclude_self.unwrap_or(true).then_some(asset_id);
    let results = ranked(&s, &collection, vector, &filter, limit, p.offset, exclude).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: format!("similar:{asset_id}"), model_version }))
}

#[utoipa::path(get, path = "/api/v1/categories", responses((status = 200, body = [Category])))]
async fn list_categories(State(s): State<Arc<ApiState>>) -> ApiResult<Json<Vec<Category>>> {
    Ok(Json(s.catalog.list_categories().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CategoryBody {
    name: String,
    description: Option<String>,
    color: Option<String>,
    #[serde(default)]
    is_default: bool,
}

#[utoipa::path(post, path = "/api/v1/categories", request_body = CategoryBody,
    responses((status = 201, body = Category), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_category(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CategoryBody>) -> ApiResult<impl IntoResponse> {
    if b.name.trim().is_empty() {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    let c = s.catalog.create_category(NewCategory { name: b.name, description: b.description, color: b.color, is_default: b.is_default }).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), responses((status = 200, body = Category), (status = 404, body = ErrorBody)))]
async fn get_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Category>> {
    Ok(Json(s.catalog.get_category(id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CategoryPatchBody {
    name: Option<String>,
    description: Option<String>,
    color: Option<String>,
    is_default: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), request_body = CategoryPatchBody,
    responses((status = 200, body = Category), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiJson(b): ApiJson<CategoryPatchBody>) -> ApiResult<Json<Category>> {
    let patch = CategoryPatch { name: b.name, description: b.description, color: b.color, is_default: b.is_default };
    Ok(Json(s.catalog.update_category(id, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    s.catalog.delete_category(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageParams {
    /// 1-based page (default 1).
    page: Option<i64>,
    /// Items per page, 1-1000 (default 50).
    page_size: Option<i64>,
}

impl PageParams {
    pub(crate) fn page(&self) -> ApiResult<Page> {
        let (page, size) = (self.page.unwrap_or(1), self.page_size.unwrap_or(50));
        if page < 1 || !(1..=1000).contains(&size) {
            return Err(ApiError::unprocessable("page must be >= 1 and pageSize between 1 and 1000"));
        }
        Ok(Page::new((page - 1) * size, size))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AssetPage {
    items: Vec<Asset>,
    total: i64,
}

#[utoipa::path(get, path = "/api/v1/assets", params(PageParams), responses((status = 200, body = AssetPage)))]
async fn list_assets(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PageParams>) -> ApiResult<Json<AssetPage>> {
    let l = s.catalog.list_assets(p.page()?).await?;
    Ok(Json(AssetPage { items: l.items, total: l.total }))
}

#[utoipa::path(get, path = "/api/v1/assets/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = Asset), (status = 404, body = ErrorBody)))]
async fn get_asset(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Asset>> {
    Ok(Json(s.catalog.get_asset(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
struct EvidenceParams {
    asset_id: Option<Uuid>,
    session_id: Option<Uuid>,
    page: Option<i64>,
    page_size: Option<i64>,
}

/// The evidence of an asset (every session that embedded it) or of a session.
#[utoipa::path(get, path = "/api/v1/evidence", params(EvidenceParams), responses((status = 200, body = [Evidence]), (status = 400, body = ErrorBody)))]
async fn list_evidence(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<EvidenceParams>) -> ApiResult<Json<Vec<Evidence>>> {
    match (p.asset_id, p.session_id) {
        (Some(a), None) => Ok(Json(s.catalog.evidence_for_asset(a).await?)),
        (None, Some(sid)) => {
            let page = PageParams { page: p.page, page_size: p.page_size }.page()?;
            Ok(Json(s.catalog.evidence_for_session(sid, page).await?.items))
        }
        _ => Err(ApiError::bad_request("give exactly one of assetId and sessionId")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
struct JobParams {
    session_id: Uuid,
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct JobPage {
    items: Vec<Job>,
    total: i64,
}

#[utoipa::path(get, path = "/api/v1/jobs", params(JobParams), responses((status = 200, body = JobPage), (status = 422, body = ErrorBody)))]
async fn list_jobs(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<JobParams>) -> ApiResult<Json<JobPage>> {
    let status = p.status.as_deref().map(|t| t.parse::<JobStatus>()).transpose().map_err(ApiError::unprocessable)?;
    let page = PageParams { page: p.page, page_size: p.page_size }.page()?;
    let l = s.catalog.list_jobs(p.session_id, status, page).await?;
    Ok(Json(JobPage { items: l.items, total: l.total }))
}

/// Serves the API until `shutdown` completes, then pauses running sessions cleanly.
pub async fn serve(state: Arc<ApiState>, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = router(state.clone());
    let stop = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
    state.shutdown().await;
    Ok(())
}
