//! The plain resources: categories, assets, evidence and jobs (listings, reads, category CRUD).

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use catalog::{Asset, Category, CategoryPatch, Evidence, Job, JobStatus, NewCategory, Page};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiResult, ApiState, error::*};

#[utoipa::path(get, path = "/api/v1/categories", responses((status = 200, body = [Category])))]
pub(crate) async fn list_categories(State(s): State<Arc<ApiState>>) -> ApiResult<Json<Vec<Category>>> {
    Ok(Json(s.catalog.list_categories().await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CategoryBody {
    name: String,
    description: Option<String>,
    color: Option<String>,
    #[serde(default)]
    is_default: bool,
}

#[utoipa::path(post, path = "/api/v1/categories", request_body = CategoryBody,
    responses((status = 201, body = Category), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_category(State(s): State<Arc<ApiState>>, ApiJson(b): ApiJson<CategoryBody>) -> ApiResult<impl IntoResponse> {
    if b.name.trim().is_empty() {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
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
    responses((status = 200, body = Category), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>, ApiJson(b): ApiJson<CategoryPatchBody>) -> ApiResult<Json<Category>> {
    let patch = CategoryPatch { name: b.name, description: b.description, color: b.color, is_default: b.is_default };
    Ok(Json(s.catalog.update_category(id, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/categories/{id}", params(("id" = i64, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_category(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    s.catalog.delete_category(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageParams {
    /// 1-based page (default 1).
    pub(crate) page: Option<i64>,
    /// Items per page, 1-1000 (default 50).
    pub(crate) page_size: Option<i64>,
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
pub(crate) struct AssetPage {
    items: Vec<Asset>,
    total: i64,
}

#[utoipa::path(get, path = "/api/v1/assets", params(PageParams), responses((status = 200, body = AssetPage)))]
pub(crate) async fn list_assets(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<PageParams>) -> ApiResult<Json<AssetPage>> {
    let l = s.catalog.list_assets(p.page()?).await?;
    Ok(Json(AssetPage { items: l.items, total: l.total }))
}

#[utoipa::path(get, path = "/api/v1/assets/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = Asset), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_asset(State(s): State<Arc<ApiState>>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Asset>> {
    Ok(Json(s.catalog.get_asset(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EvidenceParams {
    asset_id: Option<Uuid>,
    session_id: Option<Uuid>,
    page: Option<i64>,
    page_size: Option<i64>,
}

/// The evidence of an asset (every session that embedded it) or of a session.
#[utoipa::path(get, path = "/api/v1/evidence", params(EvidenceParams), responses((status = 200, body = [Evidence]), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_evidence(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<EvidenceParams>) -> ApiResult<Json<Vec<Evidence>>> {
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
pub(crate) struct JobParams {
    session_id: Uuid,
    status: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobPage {
    items: Vec<Job>,
    total: i64,
}

#[utoipa::path(get, path = "/api/v1/jobs", params(JobParams), responses((status = 200, body = JobPage), (status = 422, body = ErrorBody)))]
pub(crate) async fn list_jobs(State(s): State<Arc<ApiState>>, ApiQuery(p): ApiQuery<JobParams>) -> ApiResult<Json<JobPage>> {
    let status = p.status.as_deref().map(|t| t.parse::<JobStatus>()).transpose().map_err(ApiError::unprocessable)?;
    let page = PageParams { page: p.page, page_size: p.page_size }.page()?;
    let l = s.catalog.list_jobs(p.session_id, status, page).await?;
    Ok(Json(JobPage { items: l.items, total: l.total }))
}
