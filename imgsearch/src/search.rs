//! Text-to-image search: embed the query with the text tower, ask the vector store, hydrate the hits
//! from the catalog in one query, keep the ranking.

use std::sync::Arc;

use anyhow::{Result, bail};
use catalog::{Asset, Catalog, CatalogError};
use clip::ClipModel;
use serde::Serialize;
use vectors::{DEFAULT_COLLECTION, Hit, PointFilter, VectorError, VectorStore};

/// The most results one request may ask for.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub asset: Asset,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub limit: usize,
    pub offset: usize,
    pub filter: PointFilter,
}

/// Searches the collection the alias `image_assets` points at. No collection yet: no results. A
/// collection built by another model is an error (its vectors are not comparable with this query).
pub async fn search_text(catalog: &Catalog, vectors: &VectorStore, model: Arc<ClipModel>, req: &SearchRequest) -> Result<Vec<SearchHit>> {
    if req.query.trim().is_empty() {
        bail!("the query is empty");
    }
    if req.limit == 0 || req.limit > MAX_LIMIT {
        bail!("limit must be between 1 and {MAX_LIMIT}, not {}", req.limit);
    }
    if !index_is_searchable(vectors, &model.version).await?? {
        return Ok(Vec::new());
    }
    let text = req.query.clone();
    let m = model.clone();
    let vector = tokio::task::spawn_blocking(move || m.embed_texts(&[text.as_str()]).map(|v| v.row(0).to_vec())).await??;
    let hits = vectors.search(DEFAULT_COLLECTION, &vector, &req.filter, req.limit, req.offset).await?;
    Ok(hydrate(catalog, hits).await?)
}

/// Why an index cannot answer queries embedded by this model.
#[derive(Debug, thiserror::Error)]
#[error("the index was built with model version {built_with}, this model is {this}; search with the model that built it")]
pub struct ModelMismatch {
    pub built_with: String,
    pub this: String,
}

/// Whether the collection searches use exists (`Ok(false)`: nothing indexed yet, empty results)
/// and was built by `model_version` (another model's vectors are not comparable: an error).
pub async fn index_is_searchable(vectors: &VectorStore, model_version: &str) -> Result<Result<bool, ModelMismatch>, VectorError> {
    let Some(info) = vectors.info(DEFAULT_COLLECTION).await? else { return Ok(Ok(false)) };
    if info.model_version.as_deref() != Some(model_version) {
        return Ok(Err(ModelMismatch { built_with: info.model_version.unwrap_or_else(|| "unknown".into()), this: model_version.to_owned() }));
    }
    Ok(Ok(true))
}

/// The hits with their assets, fetched in one catalog query, in ranking order. A point whose asset
/// is gone is skipped (orphan cleanup removes it later).
pub async fn hydrate(catalog: &Catalog, hits: Vec<Hit>) -> Result<Vec<SearchHit>, CatalogError> {
    let ids: Vec<_> = hits.iter().map(|h| h.asset_id).collect();
    let assets = catalog.assets_by_ids(&ids).await?;
    Ok(hits
        .into_iter()
        .filter_map(|h| assets.iter().find(|a| a.id == h.asset_id).map(|a| SearchHit { asset: a.clone(), score: h.score }))
        .collect())
}
