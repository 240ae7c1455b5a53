//! Text-to-image search: embed the query with the text tower, ask the vector store, hydrate the hits
//! from the catalog in one query, keep the ranking.

use std::sync::Arc;

use anyhow::{Result, bail};
use catalog::{Asset, Catalog};
use clip::ClipModel;
use serde::Serialize;
use vectors::{DEFAULT_COLLECTION, PointFilter, VectorStore};

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
    let Some(info) = vectors.info(DEFAULT_COLLECTION).await? else {
        return Ok(Vec::new());
    };
    if info.model_version.as_deref() != Some(model.version.as_str()) {
        bail!(
            "the index was built with model version {}, this model is {}; search with the model that built it",
            info.model_version.as_deref().unwrap_or("unknown"),
            model.version
        );
    }
    let text = req.query.clone();
    let m = model.clone();
    let vector = tokio::task::spawn_blocking(move || m.embed_texts(&[text.as_str()]).map(|v| v.row(0).to_vec())).await??;
    let hits = vectors.search(DEFAULT_COLLECTION, &vector, &req.filter, req.limit, req.offset).await?;
    let ids: Vec<_> = hits.iter().map(|h| h.asset_id).collect();
    let assets = catalog.assets_by_ids(&ids).await?;
    // ranking order from the vector store; a point whose asset is gone is skipped (orphan cleanup
    // removes it later)
    Ok(hits
        .into_iter()
        .filter_map(|h| assets.iter().find(|a| a.id == h.asset_id).map(|a| SearchHit { asset: a.clone(), score: h.score }))
        .collect())
}
