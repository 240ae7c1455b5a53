//! Search handlers: by text, by an uploaded image, by an indexed image; each resolves the alias
//! once, embeds with the model that built that collection and hydrates the hits from the catalog.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Multipart, State},
};
use chrono::{DateTime, Utc};
use clip::ClipModel;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vectors::{DEFAULT_COLLECTION, PointFilter};

use super::{ApiResult, ApiState, error::*, views::AssetView};
use crate::search::{DEFAULT_LIMIT, MAX_LIMIT};

/// Search filters. Each may be given under the service's names too (`from_date`/`dateFrom`,
/// `to_date`/`dateTo`, `category_id`); a key not listed here is a 422.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SearchFilters {
    /// RFC 3339, or a date (`2024-05-01`: from its first instant, UTC).
    #[serde(default, alias = "dateFrom", deserialize_with = "from_instant")]
    #[schema(value_type = Option<String>)]
    from_date: Option<DateTime<Utc>>,
    /// RFC 3339, or a date (`2024-05-31`: up to its last instant, UTC).
    #[serde(default, alias = "dateTo", deserialize_with = "to_instant")]
    #[schema(value_type = Option<String>)]
    to_date: Option<DateTime<Utc>>,
    /// A number or a string of one (the web UI sends `"42"`).
    #[serde(default, deserialize_with = "int_or_string")]
    #[schema(value_type = Option<i64>)]
    category_id: Option<i64>,
    /// People are not indexed by this server: given, it is a 422.
    person_id: Option<String>,
}

/// An instant from RFC 3339 or a bare date; `end`: the last instant of that date.
pub(crate) fn instant(text: &str, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let time = if end { chrono::NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999) } else { chrono::NaiveTime::from_hms_opt(0, 0, 0) };
    Ok(day.and_time(time.expect("a valid time")).and_utc())
}

fn from_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?.map(|t| instant(&t, false)).transpose().map_err(serde::de::Error::custom)
}

fn to_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?.map(|t| instant(&t, true)).transpose().map_err(serde::de::Error::custom)
}

/// An integer, or a string holding one.
pub(crate) fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Text(String),
    }
    match Option::<IntOrString>::deserialize(d)? {
        None => Ok(None),
        Some(IntOrString::Int(n)) => Ok(Some(n)),
        Some(IntOrString::Text(t)) => t.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{t:?} is not an integer"))),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SearchBody {
    /// At most 1,000 characters (the model reads 77 tokens).
    #[schema(max_length = 1000)]
    query: String,
    /// 1-100, default 50.
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    category_id: Option<i64>,
    #[serde(default)]
    filters: SearchFilters,
}

impl SearchFilters {
    /// The vector filter these ask for, with the body's own `categoryId` (one of the two).
    fn to_point_filter(&self, category_id: Option<i64>) -> ApiResult<PointFilter> {
        if self.person_id.is_some() {
            return Err(ApiError::unprocessable("filters.personId: people are not indexed by this server"));
        }
        if let (Some(f), Some(t)) = (self.from_date, self.to_date)
            && f > t
        {
            return Err(ApiError::unprocessable("filters.fromDate is after filters.toDate"));
        }
        let category_id = match (category_id, self.category_id) {
            (Some(a), Some(b)) if a != b => return Err(ApiError::unprocessable(format!("categoryId {a} and filters.categoryId {b} disagree"))),
            (a, b) => a.or(b),
        };
        Ok(PointFilter { from: self.from_date, to: self.to_date, category_id, path_prefix: None })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchResult {
    asset: AssetView,
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
    let Some(info) = s.vectors.spec(DEFAULT_COLLECTION).await? else { return Ok(None) };
    let built_with = info.model_version.clone();
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
    exclude: Option<i64>,
) -> ApiResult<Vec<SearchResult>> {
    let started = Instant::now();
    let fetch = limit + usize::from(exclude.is_some());
    let hits = s.vectors.search(collection, &vector, filter, fetch, offset).await?;
    let hits: Vec<_> = hits.into_iter().filter(|h| Some(h.asset_id) != exclude).take(limit).collect();
    let found = crate::search::hydrate(&s.catalog, hits).await?;
    s.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
    Ok(found.into_iter().map(|h| SearchResult { asset: h.asset.into(), score: h.score, highlights: Vec::new() }).collect())
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
    // test hook: a search that takes this many ms (the concurrency limit's test holds one in flight)
    if let Some(Some(ms)) = fail::eval("api.search.delay_ms", |v| v) {
        tokio::time::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let limit = check_limit(body.limit)?;
    if body.query.trim().is_empty() {
        return Err(ApiError::unprocessable("query must not be empty"));
    }
    if body.query.chars().count() > super::MAX_QUERY_CHARS {
        // refused before any work: the text tower reads 77 tokens, a longer text only costs
        return Err(ApiError::unprocessable(format!("query must be at most {} characters", super::MAX_QUERY_CHARS)));
    }
    let filter = body.filters.to_point_filter(body.category_id)?;
    let Some((collection, model)) = check_model(&s).await? else {
        return Ok(Json(SearchResponse { results: Vec::new(), total: 0, query: body.query, model_version: None }));
    };
    let model_version = Some(model.version.clone());
    let text = body.query.clone();
    let vector = blocking(move || model.embed_texts(&[text.as_str()]).map(|m| m.row(0).to_vec())).await?;
    let results = ranked(&s, &collection, vector, &filter, limit, body.offset, None).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: body.query, model_version }))
}

/// The form of an image search (multipart): the image and, as text fields, the options.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of the form; the handler reads the fields one by one
pub(crate) struct ImageSearchForm {
    /// The image (also accepted as `image`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// 1-100, default 50.
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    offset: Option<usize>,
    /// Also accepted as `category_id`.
    category_id: Option<i64>,
}

/// Image-to-image search: upload an image (multipart field `file`) with the fields `limit`,
/// `offset` and `categoryId`; any other field is a 422.
#[utoipa::path(post, path = "/api/v1/search/image", request_body(content = ImageSearchForm, content_type = "multipart/form-data"),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn search_image(State(s): State<Arc<ApiState>>, mut form: Multipart) -> ApiResult<Json<SearchResponse>> {
    let (mut bytes, mut limit, mut offset, mut category_id) = (None, None, 0, None);
    while let Some(field) = form.next_field().await.map_err(|e| ApiError::bad_request(e.body_text()))? {
        let name = camel(field.name().unwrap_or_default());
        if name == "file" || name == "image" {
            bytes = Some(field.bytes().await.map_err(|e| ApiError::bad_request(e.body_text()))?);
            continue;
        }
        let text = field.text().await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let number = |what: &str| text.trim().parse::<i64>().map_err(|_| ApiError::unprocessable(format!("form field {what}: {text:?} is not an integer")));
        match name.as_str() {
            "limit" => limit = Some(number("limit")?.max(0) as usize),
            "offset" => offset = number("offset")?.max(0) as usize,
            "categoryId" => category_id = Some(number("categoryId")?),
            other => return Err(ApiError::unprocessable(format!("unknown form field `{other}`, expected one of `file`, `limit`, `offset`, `categoryId`"))),
        }
    }
    let limit = check_limit(limit)?;
    let bytes = bytes.ok_or_else(|| ApiError::unprocessable("multipart field `file` with the image is missing"))?;
    let Some((collection, model)) = check_model(&s).await? else {
        return Ok(Json(SearchResponse { results: Vec::new(), total: 0, query: "image".into(), model_version: None }));
    };
    let model_version = Some(model.version.clone());
    let vector = blocking(move || {
        let prepared = model.preprocessor().prepare(&bytes)?;
        model.embed_images(std::slice::from_ref(&prepared)).map(|m| m.row(0).to_vec())
    })
    .await?;
    let filter = PointFilter { category_id, ..Default::default() };
    let results = ranked(&s, &collection, vector, &filter, limit, offset, None).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: "image".into(), model_version }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SimilarParams {
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
    /// Leave the asset itself out (default true).
    exclude_self: Option<bool>,
    category_id: Option<i64>,
}

/// Images similar to an indexed one.
#[utoipa::path(get, path = "/api/v1/search/similar/{asset_id}", params(("asset_id" = i64, Path), SimilarParams),
    responses((status = 200, body = SearchResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn search_similar(State(s): State<Arc<ApiState>>, ApiPath(asset_id): ApiPath<i64>, ApiQuery(p): ApiQuery<SimilarParams>) -> ApiResult<Json<SearchResponse>> {
    let limit = check_limit(p.limit)?;
    s.catalog.get_asset(asset_id).await?;
    let Some(info) = s.vectors.spec(DEFAULT_COLLECTION).await? else {
        return Err(ApiError::not_found(format!("asset {asset_id} is not indexed yet")));
    };
    let (collection, model_version) = (info.name, Some(info.model_version));
    let stored = s.vectors.retrieve(&collection, &[asset_id], true).await?;
    let Some(vector) = stored.into_iter().next().and_then(|p| p.vector) else {
        return Err(ApiError::not_found(format!("asset {asset_id} is not indexed yet")));
    };
    let filter = PointFilter { category_id: p.category_id, ..Default::default() };
    let exclude = p.exclude_self.unwrap_or(true).then_some(asset_id);
    let results = ranked(&s, &collection, vector, &filter, limit, p.offset, exclude).await?;
    Ok(Json(SearchResponse { total: results.len(), results, query: format!("similar:{asset_id}"), model_version }))
}
