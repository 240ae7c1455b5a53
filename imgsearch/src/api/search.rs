//! Search handlers: by text, by an uploaded image, by an indexed image; each resolves the alias
//! once, embeds with the model that built that collection and hydrates the hits from the catalog.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Multipart, State},
};
use catalog::Asset;
use chrono::{DateTime, Utc};
use clip::ClipModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vectors::{DEFAULT_COLLECTION, PointFilter};

use super::{ApiResult, ApiState, error::*};
use crate::search::{DEFAULT_LIMIT, MAX_LIMIT};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchFilters {
    from_date: Option<DateTime<Utc>>,
    to_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SearchBody {
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
pub(crate) struct SearchResult {
    asset: Asset,
    score: f32,
    highlights: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchResponse {
    results: Vec<SearchResult>,
    /// Results in this page.
    total: usize,
    query: String,
    /// The model that built the collection searched (and embedded the query).
    model_version: Option<String>,
}

pub(crate) fn check_limit(limit: Option<usize>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::unprocessable(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    Ok(limit)
}

/// The collection the alias points at now and the model that built it (resolved once per request,
/// so an alias swap midway cannot pair one model's query with another model's vectors). None:
/// nothing indexed yet. A collection built by a model this server does not hold is a conflict.
pub(crate) async fn check_model(s: &ApiState) -> ApiResult<Option<(String, Arc<ClipModel>)>> {
    let Some(info) = s.vectors.info(DEFAULT_COLLECTION).await? else { return Ok(None) };
    let built_with = info.model_version.clone().unwrap_or_else(|| "unknown".into());
    let model = s.search_models.read().expect("models lock").iter().find(|m| m.version == built_with).cloned();
    match model {
        Some(m) => Ok(Some((info.name, m))),
        None => Err(ApiError::conflict(crate::search::ModelMismatch { built_with, this: s.model().version.clone() }.to_string())),
    }
}

/// Ranks by the vector, hydrates from the catalog in one query, keeps the ranking.
pub(crate) async fn ranked(
    s: &ApiState,
    collection: &str,
    vector: Vec<f32>,
    filter: &PointFilter,
    limit: usize,
    offset: usize,
    exclude: Option<Uuid>,
) -> ApiResult<Vec<SearchResult>> {
    let started = Instant::now();
    let fetch = limit + usize::from(exclude.is_some());
    let hits = s.vectors.search(collection, &vector, filter, fetch, offset).await?;
    let hits: Vec<_> = hits.into_iter().filter(|h| Some(h.asset_id) != exclude).take(limit).collect();
    let found = crate::search::hydrate(&s.catalog, hits).await?;
    s.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
    Ok(found.into_iter().map(|h| SearchResult { asset: h.asset, score: h.score, highlights: Vec::new() }).collect())
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, clip::ClipError> + Send + 'static) -> ApiResult<T> {
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
pub(crate) async fn search(State(s): State<Arc<ApiState>>, ApiJson(body): ApiJson<SearchBody>) -> ApiResult<Json<SearchResponse>> {
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
pub(crate) struct ImageSearchParams {
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    category_id: Option<i64>,
}

/// Image-to-image search: upload an image (multipart field `file`).
#[utoipa::path(post, path = "/api/v1/search/image", params(ImageSearchParams),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn search_image(State(s): State<Arc<ApiState>>, ApiQuery(params): ApiQuery<ImageSearchParams>, mut form: Multipart) -> ApiResult<Json<SearchResponse>> {
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
pub(crate) struct SimilarParams {
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
pub(crate) async fn search_similar(State(s): State<Arc<ApiState>>, ApiPath(asset_id): ApiPath<Uuid>, ApiQuery(p): ApiQuery<SimilarParams>) -> ApiResult<Json<SearchResponse>> {
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
