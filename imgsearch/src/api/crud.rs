//! The plain resources: categories, assets, evidence and jobs (listings, reads, category CRUD).

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use catalog::{Category, CategoryPatch, Evidence, JobStatus, NewCategory};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiResult, ApiState,
    error::*,
    page::{Paged, page},
    views::{AssetView, JobView},
};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    pub(crate) page: Option<i64>,
    /// Items per page, 1-100 (default 50). `page_size` is read too.
    #[param(minimum = 1, maximum = 100)]
    pub(crate) page_size: Option<i64>,
}

/// The categories, by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/categories", params(PageParams), responses((status = 200, body = Paged<Category>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_categories(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PageParams>) -> ApiResult<Json<Paged<Category>>> {
    let page = page(p.page, p.page_size, 50)?;
    Ok(Json(Paged::new(s.catalog.list_categories(page).await?, page, |c| c)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CategoryBody {
    /// 1-100 characters, unique.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    description: Option<String>,
    /// `#RRGGBB`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$")]
    color: Option<String>,
    #[serde(default)]
    is_default: bool,
}

fn check_category(name: Option<&str>, color: Option<&str>) -> ApiResult<()> {
    if let Some(name) = name
        && (name.trim().is_empty() || name.chars().count() > 100)
    {
        return Err(ApiError::unprocessable("name must be 1 to 100 characters"));
    }
    if let Some(c) = color
        && !(c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit()))
    {
        return Err(ApiError::unprocessable(format!("color must be #RRGGBB, not {c:?}")));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/categories", request_body = CategoryBody,
    responses((status = 201, body = Category), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_category(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CategoryBody>) -> ApiResult<impl IntoResponse> {
    check_category(Some(&b.name), b.color.as_deref())?;
    let c = s.catalog.create_category(NewCategory { name: b.name, description: b.description, color: b.color, is_default: b.is_default }).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), responses((status = 200, body = Category), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Category>> {
    Ok(Json(s.catalog.get_category(id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CategoryPatchBody {
    name: Option<String>,
    description: Option<String>,
    color: Option<String>,
    is_default: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), request_body = CategoryPatchBody,
    responses((status = 200, body = Category), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiJson(b): ApiJson<CategoryPatchBody>) -> ApiResult<Json<Category>> {
    check_category(b.name.as_deref(), b.color.as_deref())?;
    let patch = CategoryPatch { name: b.name, description: b.description, color: b.color, is_default: b.is_default };
    Ok(Json(s.catalog.update_category(id, patch).await?))
}

/// Deletes a category; its sessions and assets stay, without a category. The default category
/// cannot be deleted (400).
#[utoipa::path(delete, path = "/api/v1/categories/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    if s.catalog.get_category(id).await?.is_default {
        return Err(ApiError::bad_request("the default category cannot be deleted"));
    }
    s.catalog.delete_category(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AssetParams {
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    /// Created (taken) at or after: RFC 3339, or a date (from its first instant, UTC).
    from_date: Option<String>,
    /// Created (taken) at or before: RFC 3339, or a date (up to its last instant, UTC).
    to_date: Option<String>,
}

/// The assets, by path, a page at a time; `from_date`/`to_date` keep those created in that range.
#[utoipa::path(get, path = "/api/v1/assets", params(AssetParams), responses((status = 200, body = Paged<AssetView>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_assets(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<AssetParams>) -> ApiResult<Json<Paged<AssetView>>> {
    let page = page(p.page, p.page_size, 50)?;
    let when = |text: &Option<String>, end: bool, name: &str| {
        text.as_deref().map(|t| super::search::instant(t, end)).transpose().map_err(|e| ApiError::unprocessable(format!("{name}: {e}")))
    };
    let (from, to) = (when(&p.from_date, false, "from_date")?, when(&p.to_date, true, "to_date")?);
    Ok(Json(Paged::new(s.catalog.list_assets_created(page, from, to).await?, page, AssetView::from)))
}

#[utoipa::path(get, path = "/api/v1/assets/{id}", params(("id" = i64, Path)), responses((status = 200, body = AssetView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_asset(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<AssetView>> {
    Ok(Json(s.catalog.get_asset(id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EvidenceParams {
    /// Every session's evidence for this asset.
    asset_id: Option<i64>,
    /// A session's evidence, a page at a time.
    session_id: Option<i64>,
    #[param(minimum = 1)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
}

/// The evidence of an asset (every session that embedded it) or of a session.
#[utoipa::path(get, path = "/api/v1/evidence", params(EvidenceParams), responses((status = 200, body = Paged<Evidence>), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_evidence(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<EvidenceParams>) -> ApiResult<Json<Paged<Evidence>>> {
    let page = page(p.page, p.page_size, 50)?;
    let listing = match (p.asset_id, p.session_id) {
        (Some(a), None) => {
            let all = s.catalog.evidence_for_asset(a).await?;
            let total = all.len() as i64;
            catalog::Listing { items: all.into_iter().skip(page.offset as usize).take(page.limit as usize).collect(), total }
        }
        (None, Some(sid)) => s.catalog.evidence_for_session(sid, page).await?,
        _ => return Err(ApiError::unprocessable("give exactly one of asset_id and session_id")),
    };
    Ok(Json(Paged::new(listing, page, |e| e)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobParams {
    session_id: i64,
    /// pending, queued, running, completed, failed, cancelled
    status: Option<String>,
    #[param(minimum = 1)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
}

/// The jobs of a session (also at `/training/sessions/{id}/jobs`).
#[utoipa::path(get, path = "/api/v1/jobs", params(JobParams), responses((status = 200, body = Paged<JobView>), (status = 404, description = "no session has that sessionId", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_jobs(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<JobParams>) -> ApiResult<Json<Paged<JobView>>> {
    Ok(Json(jobs_page(&s, p.session_id, p.status.as_deref(), p.page, p.page_size).await?))
}

/// A page of a session's jobs, with their image paths.
pub(crate) async fn jobs_page(s: &ApiState, session: i64, status: Option<&str>, page_no: Option<i64>, page_size: Option<i64>) -> ApiResult<Paged<JobView>> {
    let status = status.map(|t| t.parse::<JobStatus>()).transpose().map_err(ApiError::unprocessable)?;
    let page = page(page_no, page_size, 50)?;
    s.catalog.get_session(session).await?;
    let listing = s.catalog.list_jobs(session, status, page).await?;
    let total = listing.total;
    let items = JobView::page(&s.catalog, listing.items).await?;
    Ok(Paged::new(catalog::Listing { items, total }, page, |j| j))
}
