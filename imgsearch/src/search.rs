//! Text-to-image search: embed the query with the text tower, ask the vector store, hydrate the hits
//! from the catalog in one query, keep the ranking.

use std::sync::Arc;

use anyhow::{Result, bail};
use catalog::{Asset, Catalog, CatalogError};
use clip::ClipModel;
use serde::Serialize;
use vectors::{DEFAULT_COLLECTION, Hit, PointFilter, VectorStore};

/// The most results one request may ask for.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 50;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub asset: Asset,
    pub score: f32,
    /// The model that built the vector (from its payload).
    pub model_version: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub limit: usize,
    pub offset: usize,
    pub filter: PointFilter,
}

/// Searches the collection the alias `image_assets` points at, with the model that built it (one
/// of `models`). No collection yet: no results. A collection built by a model not given is an error
/// (its vectors are not comparable with this query). The alias is resolved once: a swap midway
/// cannot pair one model's query with another model's vectors.
pub async fn search_text(catalog: &Catalog, vectors: &VectorStore, models: &[Arc<ClipModel>], req: &SearchRequest) -> Result<Vec<SearchHit>> {
    if req.query.trim().is_empty() {
        bail!("the query is empty");
    }
    if req.limit == 0 || req.limit > MAX_LIMIT {
        bail!("limit must be between 1 and {MAX_LIMIT}, not {}", req.limit);
    }
    let Some(info) = vectors.spec(DEFAULT_COLLECTION).await? else { return Ok(Vec::new()) };
    let built_with = info.model_version.clone();
    let Some(model) = models.iter().find(|m| m.version == built_with).cloned() else {
        let this = models.iter().map(|m| m.version.clone()).collect::<Vec<_>>().join(", ");
        return Err(ModelMismatch { built_with, this }.into());
    };
    let text = req.query.clone();
    let vector = tokio::task::spawn_blocking(move || model.embed_texts(&[text.as_str()]).map(|v| v.row(0).to_vec())).await??;
    let hits = vectors.search(&info.name, &vector, &req.filter, req.limit, req.offset).await?;
    Ok(hydrate(catalog, hits).await?)
}

/// Why an index cannot answer queries embedded by this model.
#[derive(Debug, thiserror::Error)]
#[error("the index was built with model version {built_with}, this model is {this}; search with the model that built it")]
pub struct ModelMismatch {
    pub built_with: String,
    pub this: String,
}

/// The hits with their assets, fetched in one catalog query, in ranking order. A point whose asset
/// is gone is skipped (orphan cleanup removes it later).
pub async fn hydrate(catalog: &Catalog, hits: Vec<Hit>) -> Result<Vec<SearchHit>, CatalogError> {
    let ids: Vec<_> = hits.iter().map(|h| h.asset_id).collect();
    let assets = catalog.assets_by_ids(&ids).await?;
    Ok(hits
        .into_iter()
        .filter_map(|h| assets.iter().find(|a| a.id == h.asset_id).map(|a| SearchHit { asset: a.clone(), score: h.score, model_version: h.model_version.clone() }))
        .collect())
}
