//! Vector management for operators: delete the vectors of an asset, a directory, a session or a
//! category; clean up orphans in both directions; reset everything; per-directory stats. The same
//! code serves the CLI (`imgsearch vectors ...`) and the API (`/api/v1/vectors/...`), on either
//! backend pair (embedded + SQLite, Qdrant server + PostgreSQL).
//!
//! Every delete runs in one order: the vectors, then a `vector_deletion_logs` row (type, target,
//! count, reason), then the assets' state (`pending`, no `indexed_at`, so the next scan embeds them
//! again). A crash between the steps leaves assets marked indexed whose vector is gone, which is
//! exactly what `cleanup_orphans` finds and repairs. Broad deletes (directory, category, session)
//! need `confirm`; a reset also needs the text `DELETE ALL VECTORS`.

use std::collections::{BTreeMap, HashSet};

use catalog::{AssetSelection, Catalog, CatalogError, DeletionLog, DeletionType, NewDeletionLog};
use serde::Serialize;
use vectors::{VectorError, VectorStore};

/// What a reset must be confirmed with.
pub const RESET_CONFIRMATION: &str = "DELETE ALL VECTORS";

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    ConfirmationRequired(String),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

type Result<T> = std::result::Result<T, ManageError>;

/// What to delete the vectors of.
#[derive(Debug, Clone)]
pub enum Target {
    Assets(Vec<i64>),
    /// Every asset under this directory (its whole subtree).
    Directory(String),
    Session(i64),
    Category(i64),
}

impl Target {
    fn needs_confirmation(&self) -> bool {
        !matches!(self, Target::Assets(_))
    }

    fn describe(&self) -> (DeletionType, String) {
        match self {
            Target::Assets(ids) => (DeletionType::Asset, ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
            Target::Directory(d) => (DeletionType::Directory, d.clone()),
            Target::Session(s) => (DeletionType::Session, s.to_string()),
            Target::Category(c) => (DeletionType::Category, c.to_string()),
        }
    }
}

/// What a delete did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// Vectors removed from the store.
    pub deleted_vectors: u64,
    /// Assets marked not indexed in the catalog.
    pub assets_updated: u64,
    pub log: DeletionLog,
}

/// Deletes the vectors of `target` from `collection`, logs it, and marks the assets not indexed.
pub async fn delete_vectors(catalog: &Catalog, vectors: &VectorStore, collection: &str, target: Target, reason: Option<String>, confirm: bool) -> Result<Deletion> {
    if target.needs_confirmation() && !confirm {
        let (kind, what) = target.describe();
        return Err(ManageError::ConfirmationRequired(format!("deleting the vectors of a {} ({what}) needs confirm: true", kind.as_str().to_lowercase())));
    }
    let ids: Vec<i64> = match &target {
        Target::Assets(ids) => ids.clone(),
        Target::Directory(dir) => catalog.assets_under(dir).await?.into_iter().map(|a| a.id).collect(),
        Target::Session(s) => {
            catalog.get_session(*s).await?;
            catalog.asset_ids(AssetSelection::Session(*s)).await?
        }
        Target::Category(c) => {
            catalog.get_category(*c).await?;
            catalog.asset_ids(AssetSelection::Category(*c)).await?
        }
    };
    // 1. the vectors: of exactly the assets the catalog selected, so the two cannot disagree (a
    // filter on the payload is another selection: a root directory, a category changed since)
    let deleted = delete_ids(vectors, collection, &ids).await?;
    // 2. the log
    let (deletion_type, target_text) = target.describe();
    let log = catalog
        .log_deletion(NewDeletionLog {
            deletion_type,
            target: Some(target_text),
            vector_count: deleted as i64,
            reason,
            metadata: serde_json::json!({"collection": collection, "assets": ids.len()}),
        })
        .await?;
    // 3. the assets
    let assets_updated = catalog.mark_unindexed(&ids).await?;
    Ok(Deletion { deleted_vectors: deleted, assets_updated, log })
}

/// What a scan found gone from disk: their vectors are deleted (logged, reason "file deleted on
/// disk") and the assets marked deleted. Returns how many vectors went.
pub async fn forget_missing(catalog: &Catalog, vectors: &VectorStore, collection: &str, missing: &[i64]) -> Result<u64> {
    if missing.is_empty() {
        return Ok(0);
    }
    let deleted = delete_ids(vectors, collection, missing).await?;
    catalog
        .log_deletion(NewDeletionLog {
            deletion_type: DeletionType::Asset,
            target: Some(missing.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
            vector_count: deleted as i64,
            reason: Some("file deleted on disk".into()),
            metadata: serde_json::json!({"collection": collection, "assets": missing.len()}),
        })
        .await?;
    catalog.mark_deleted(missing).await?;
    Ok(deleted)
}

/// Soft-deletes (or, with `deleted: false`, restores) assets' vectors: searches stop (or start
/// again) returning them; the vectors stay until a hard delete. A soft delete is logged with
/// `{"soft": true}`; the assets stay indexed. Returns how many vectors changed.
pub async fn soft_delete(catalog: &Catalog, vectors: &VectorStore, collection: &str, ids: &[i64], reason: Option<String>, deleted: bool) -> Result<u64> {
    let changed = vectors.set_deleted(collection, ids, deleted).await?;
    if deleted {
        let target = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        catalog
            .log_deletion(NewDeletionLog {
                deletion_type: DeletionType::Asset,
                target: Some(target),
                vector_count: changed as i64,
                reason,
                metadata: serde_json::json!({"collection": collection, "soft": true}),
            })
            .await?;
    }
    Ok(changed)
}

async fn delete_ids(vectors: &VectorStore, collection: &str, ids: &[i64]) -> Result<u64> {
    let mut deleted = 0;
    for chunk in ids.chunks(1000) {
        deleted += vectors.delete_ids(collection, chunk).await?;
    }
    Ok(deleted)
}

/// What an orphan cleanup found (and, unless a dry run, repaired).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cleanup {
    pub dry_run: bool,
    /// Vectors in the store.
    pub vectors_scanned: u64,
    /// Vectors whose asset is gone from the catalog: deleted.
    pub orphan_vectors: u64,
    /// Assets marked indexed whose vector is missing: marked pending, embedded by the next scan.
    pub assets_requeued: u64,
    /// Up to 20 of each, for a look.
    pub orphan_vector_examples: Vec<i64>,
    pub requeued_asset_examples: Vec<i64>,
}

/// Compares every vector of the collection (the whole scroll, every page) with the catalog.
pub async fn cleanup_orphans(catalog: &Catalog, vectors: &VectorStore, collection: &str, dry_run: bool) -> Result<Cleanup> {
    let in_store: HashSet<i64> = vectors.scroll_ids(collection).await?.into_iter().collect();
    let assets: HashSet<i64> = catalog.asset_ids(AssetSelection::All).await?.into_iter().collect();
    let indexed = catalog.asset_ids(AssetSelection::Indexed).await?;
    let mut orphans: Vec<i64> = in_store.iter().filter(|id| !assets.contains(id)).copied().collect();
    orphans.sort();
    let missing: Vec<i64> = indexed.into_iter().filter(|id| !in_store.contains(id)).collect();
    let mut report = Cleanup {
        dry_run,
        vectors_scanned: in_store.len() as u64,
        orphan_vectors: orphans.len() as u64,
        assets_requeued: missing.len() as u64,
        orphan_vector_examples: orphans.iter().take(20).copied().collect(),
        requeued_asset_examples: missing.iter().take(20).copied().collect(),
    };
    if dry_run {
        return Ok(report);
    }
    if !orphans.is_empty() {
        report.orphan_vectors = delete_ids(vectors, collection, &orphans).await?;
        catalog
            .log_deletion(NewDeletionLog {
                deletion_type: DeletionType::Orphan,
                target: None,
                vector_count: report.orphan_vectors as i64,
                reason: Some("vectors whose asset is gone from the catalog".into()),
                metadata: serde_json::json!({"collection": collection, "assetsRequeued": missing.len()}),
            })
            .await?;
    }
    report.assets_requeued = catalog.mark_unindexed(&missing).await?;
    Ok(report)
}

/// Deletes every vector of the collection (kept, empty), logs it and marks every asset not indexed.
pub async fn reset(catalog: &Catalog, vectors: &VectorStore, collection: &str, confirm: bool, confirmation_text: Option<&str>, reason: Option<String>) -> Result<Deletion> {
    if !confirm || confirmation_text != Some(RESET_CONFIRMATION) {
        return Err(ManageError::ConfirmationRequired(format!("a reset deletes every vector; it needs confirm: true and the confirmation text {RESET_CONFIRMATION:?}")));
    }
    let ids = vectors.scroll_ids(collection).await?;
    let deleted = delete_ids(vectors, collection, &ids).await?;
    let log = catalog
        .log_deletion(NewDeletionLog {
            deletion_type: DeletionType::FullReset,
            target: Some(collection.to_owned()),
            vector_count: deleted as i64,
            reason,
            metadata: serde_json::json!({"collection": collection}),
        })
        .await?;
    let all = catalog.asset_ids(AssetSelection::All).await?;
    let assets_updated = catalog.mark_unindexed(&all).await?;
    Ok(Deletion { deleted_vectors: deleted, assets_updated, log })
}

/// Assets and indexed assets per directory (each image counted in its own folder).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryStats {
    pub directory: String,
    pub assets: u64,
    pub indexed: u64,
    /// When the last of its assets was indexed.
    pub last_indexed: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn directory_stats(catalog: &Catalog) -> Result<Vec<DirectoryStats>> {
    let mut by_dir: BTreeMap<String, (u64, u64, Option<chrono::DateTime<chrono::Utc>>)> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = catalog.list_assets(catalog::Page::new(offset, 1000)).await?;
        let n = page.items.len() as i64;
        for a in page.items {
            let dir = protocol::paths::from_stored(&a.path).parent().map(protocol::paths::to_stored).unwrap_or_default();
            let e = by_dir.entry(dir).or_default();
            e.0 += 1;
            e.1 += a.indexed_at.is_some() as u64;
            e.2 = e.2.max(a.indexed_at);
        }
        offset += n;
        if n == 0 || offset >= page.total {
            break;
        }
    }
    Ok(by_dir.into_iter().map(|(directory, (assets, indexed, last_indexed))| DirectoryStats { directory, assets, indexed, last_indexed }).collect())
}

/// What a model upgrade did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    /// The collection the alias pointed at before (kept until the operator drops it).
    pub previous: Option<String>,
    /// The collection built with the new model.
    pub collection: String,
    pub model_version: String,
    pub session: i64,
    pub indexed: usize,
    pub failed: usize,
    /// Whether the alias now points at the new collection.
    pub swapped: bool,
}

/// Builds a new collection `image_assets_v{N+1}` with `model`, embedding every asset through the
/// normal pipeline (a session of its own, new jobs, new evidence) while searches keep answering
/// from the collection the alias points at; then, with `swap` and unless stopped midway, points the
/// alias at the new collection in one atomic operation. The old collection is kept.
pub async fn upgrade_model(
    catalog: &Catalog,
    vectors: &std::sync::Arc<VectorStore>,
    model: std::sync::Arc<clip::ClipModel>,
    swap: bool,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Upgrade> {
    let alias = vectors::DEFAULT_COLLECTION;
    let previous = vectors.info(alias).await?;
    if let Some(p) = &previous
        && p.model_version.as_deref() == Some(model.version.as_str())
    {
        anyhow::bail!("the index ({}) is already built with model version {}; `imgsearch vectors reindex --all` embeds it again with the same model", p.name, model.version);
    }
    let next = vectors.list_collections().await?.iter().filter_map(|n| n.strip_prefix(&format!("{alias}_v")).and_then(|v| v.parse::<u32>().ok())).max().unwrap_or(0) + 1;
    let collection = format!("{alias}_v{next}");
    vectors.ensure_collection(&vectors::CollectionSpec { name: collection.clone(), dim: model.embed_dim, model_version: model.version.clone() }).await?;

    let session = catalog
        .create_session(catalog::NewSession {
            name: format!("model upgrade to {} ({collection})", model.version),
            root_path: format!("model-upgrade:{collection}"),
            category_id: None,
        })
        .await?;
    let session = catalog.transition_session(session.id, catalog::SessionStatus::Running).await?;
    let ids = catalog.asset_ids(AssetSelection::All).await?;
    catalog.create_jobs(session.id, &ids).await?;
    let jobs = crate::pipeline::open_jobs(catalog.clone(), &session);
    let embedder = std::sync::Arc::new(embedder::Embedder::new(model.clone(), 0, false));
    let writer = std::sync::Arc::new(writer::Writer { catalog: catalog.clone(), vectors: vectors.clone(), collection: collection.clone() });
    let options = crate::pipeline::PipelineOptions { overlap_decode: model.image_device() != "cpu", ..Default::default() };
    let stats = crate::pipeline::run(jobs, embedder, writer, options, cancel, |_| {}).await?;
    if stats.interrupted {
        catalog.transition_session(session.id, catalog::SessionStatus::Paused).await?;
    } else {
        coordinator::finish_if_done(catalog, session.id).await?;
    }
    let swapped = swap && !stats.interrupted;
    if swapped {
        vectors.set_alias(alias, &collection).await?;
    }
    Ok(Upgrade {
        previous: previous.map(|p| p.name),
        collection,
        model_version: model.version.clone(),
        session: session.id,
        indexed: stats.completed,
        failed: stats.failed,
        swapped,
    })
}
