//! The REST API (`imgsearch serve`): a drop-in for the service it replaces (MacPhobos'
//! image-search-service) on every endpoint the two share: its paths, names, integer ids, list
//! envelopes and status codes, so its web UI and its clients keep working (README: the
//! compatibility table). camelCase JSON, one error shape, an OpenAPI document generated from these
//! handlers at `/api/v1/openapi.json`. Cross-origin callers (that web UI on its own origin) are
//! allowed by an explicit list of origins (`serve --cors-origin`), none by default.
//!
//! This module is the router and the OpenAPI document; the handlers live by concern: `search`,
//! `crud` (categories, assets, evidence, jobs), `sessions` (over the session runner in
//! `crate::sessions`), `vector_admin`, `images`; `views` and `page` are the service's shapes;
//! `state` is what they share.
//!
//! Indexing sessions started through the API run inside this process on the same pipeline as
//! `imgsearch index`; pause and cancel stop the feed and let the batches in flight finish.

pub mod conn;
mod crud;
mod error;
pub mod guard;
mod images;
pub(crate) mod metrics;
mod page;
mod search;
mod sessions;
mod state;
mod vector_admin;
mod views;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    routing::{delete, get, post},
};
use error::ErrorResponses;
pub use error::{ApiError, ErrorBody};
pub use state::ApiState;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

type ApiResult<T> = Result<T, ApiError>;

/// The largest JSON body a route takes (1 MiB: the largest, a list of asset ids, is far smaller).
pub const JSON_BODY_LIMIT: usize = 1 << 20;
/// The longest text query, in characters (the text tower reads 77 tokens; a longer query is refused
/// before any work, and the tokenizer cuts what it is given anyway).
pub const MAX_QUERY_CHARS: usize = 1000;

#[derive(OpenApi)]
#[openapi(
    info(title = "image-search", description = "Text-to-image search over CLIP vectors"),
    paths(
        health,
        ready,
        search::search,
        search::search_image,
        search::search_similar,
        crud::list_categories,
        crud::create_category,
        crud::get_category,
        crud::update_category,
        crud::delete_category,
        crud::list_assets,
        crud::get_asset,
        images::thumbnail,
        images::full,
        images::preview_thumbnail,
        crud::list_evidence,
        crud::list_jobs,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::start,
        sessions::pause,
        sessions::cancel,
        sessions::progress,
        sessions::progress_unified,
        sessions::jobs,
        sessions::patch,
        sessions::delete,
        sessions::restart,
        sessions::subdirectories,
        sessions::select_subdirectories,
        sessions::scan_directories,
        sessions::directories,
        sessions::preview,
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
    components(schemas(ErrorBody)),
    modifiers(&ErrorResponses)
)]
struct ApiDoc;

/// Which other origins may call the API from a browser: none (the default), or exactly these
/// (`scheme://host[:port]`). Credentials are never allowed cross-origin.
pub fn cors(origins: &[String]) -> anyhow::Result<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let mut list = Vec::with_capacity(origins.len());
    for o in origins {
        let trimmed = o.trim_end_matches('/');
        let valid = (trimmed.starts_with("http://") || trimmed.starts_with("https://")) && !trimmed.contains('*') && trimmed.matches('/').count() == 2;
        anyhow::ensure!(valid, "--cors-origin {o:?}: give an origin like http://localhost:3000 (scheme, host, port; no path, no wildcard)");
        list.push(HeaderValue::from_str(trimmed)?);
    }
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(list))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, HeaderName::from_static("x-api-key")])
        .max_age(std::time::Duration::from_secs(600)))
}

/// Routes that decode images or run a model: at most `state.heavy` at once; beyond, 503 with
/// Retry-After at once (tower's load shedding), never a queue that grows with the flood.
fn heavy_routes(state: &Arc<ApiState>) -> Router<Arc<ApiState>> {
    use axum::{error_handling::HandleErrorLayer, http::header};
    let busy = |_: tower::BoxError| async {
        let mut r = axum::response::IntoResponse::into_response(ApiError::unavailable("the server is busy with other searches and images; try again shortly"));
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    };
    Router::new()
        .route("/search", post(search::search))
        .route("/search/image", post(search::search_image).layer(DefaultBodyLimit::max(state.upload_limit)))
        .route("/search/similar/{asset_id}", get(search::search_similar))
        .route("/images/{id}/thumbnail", get(images::thumbnail))
        .route("/images/{id}/full", get(images::full))
        .route("/training/directories/preview/thumbnail", get(images::preview_thumbnail))
        .layer(tower::ServiceBuilder::new().layer(HandleErrorLayer::new(busy)).load_shed().layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(state.heavy.clone())))
}

pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .merge(heavy_routes(&state))
        .route("/categories", get(crud::list_categories).post(crud::create_category))
        .route("/categories/{id}", get(crud::get_category).patch(crud::update_category).delete(crud::delete_category))
        .route("/assets", get(crud::list_assets))
        .route("/assets/{id}", get(crud::get_asset))
        .route("/evidence", get(crud::list_evidence))
        .route("/jobs", get(crud::list_jobs))
        .route("/training/sessions", get(sessions::list).post(sessions::create))
        .route("/training/sessions/{id}", get(sessions::get).patch(sessions::patch).delete(sessions::delete))
        .route("/training/sessions/{id}/restart", post(sessions::restart))
        .route("/training/sessions/{id}/restart-training", post(sessions::restart))
        .route("/training/sessions/{id}/subdirectories", get(sessions::subdirectories).patch(sessions::select_subdirectories))
        .route("/training/sessions/{id}/jobs", get(sessions::jobs))
        .route("/training/sessions/{id}/progress-unified", get(sessions::progress_unified))
        .route("/training/directories", get(sessions::directories))
        .route("/training/directories/scan", post(sessions::scan_directories))
        .route("/training/directories/preview", get(sessions::preview))
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
        // JSON bodies are small; an image upload has its own limit (`search_image`'s route)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        // a body that stops arriving fails the request (400) after the idle time: while a handler
        // waits for it the connection counts as busy, and the idle timeout would never cut it
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.idle_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(state.cors.clone())
        .layer(axum::middleware::from_fn(conn::busy))
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

/// Serves the API until `shutdown` completes, then pauses running sessions cleanly.
pub async fn serve(state: Arc<ApiState>, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = router(state.clone());
    let stop = shutdown.clone();
    let listener = conn::Limited::new(listener, state.max_connections, state.idle_timeout);
    axum::serve(listener, app.into_make_service_with_connect_info::<conn::InFlight>()).with_graceful_shutdown(async move { stop.cancelled().await }).await?;
    state.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document says what the server sends: enums in their sent spelling, both answers of a
    /// delete, limits as schema bounds, and the shared error answers on every operation.
    #[test]
    fn the_openapi_document_describes_what_is_sent() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["SessionStatus"]["enum"], serde_json::json!(["pending", "running", "paused", "completed", "cancelled", "failed"]));
        assert_eq!(schemas["TrainingStatus"]["enum"][3], "trained");
        assert_eq!(schemas["DeletionType"]["enum"][5], "FULL_RESET");
        let answers: Vec<&str> = schemas["AssetsDeleted"]["oneOf"].as_array().unwrap().iter().map(|s| s["$ref"].as_str().unwrap()).collect();
        assert_eq!(answers, ["#/components/schemas/VectorsDeleted", "#/components/schemas/SoftDeleted"]);
        assert_eq!(schemas["SearchBody"]["properties"]["query"]["maxLength"], MAX_QUERY_CHARS);
        assert_eq!(schemas["ByAssets"]["properties"]["assetIds"]["maxItems"], 1000);
        let page_size = doc["paths"]["/api/v1/assets"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "pageSize").unwrap().clone();
        assert_eq!((page_size["in"].as_str(), &page_size["schema"]["maximum"]), (Some("query"), &serde_json::json!(100)));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in ["400", "401", "422", "503"] {
                    assert_eq!(op["responses"][status]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }
}
