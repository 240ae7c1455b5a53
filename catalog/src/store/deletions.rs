//! Vector deletion logs, and marking assets not indexed once their vectors are gone.

use chrono::Utc;
use sqlx::types::Json;

use super::{Catalog, Result, rows::*, sql};
use crate::model::*;

impl Catalog {
    /// Marks assets as not indexed (their vectors were deleted): `pending`, no `indexed_at`, so the
    /// next scan embeds them again. Returns how many changed.
    pub async fn mark_unindexed(&self, ids: &[AssetId]) -> Result<u64> {
        self.unindex_assets(ids, "").await
    }

    /// Marks assets whose file is gone from disk: `deleted_at` set, not indexed (their vectors were
    /// removed). A scan that finds the file again clears it. Returns how many changed.
    pub async fn mark_deleted(&self, ids: &[AssetId]) -> Result<u64> {
        self.unindex_assets(ids, "deleted_at = $1, ").await
    }

    /// `pending`, no `indexed_at`, plus `also` (more `SET` assignments; `$1` is now), in chunks.
    async fn unindex_assets(&self, ids: &[AssetId], also: &str) -> Result<u64> {
        let now = Utc::now();
        let mut changed = 0;
        for chunk in ids.chunks(500) {
            let placeholders = (2..chunk.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let text = format!("UPDATE image_assets SET {also}training_status = 'pending', indexed_at = NULL, updated_at = $1 WHERE id IN ({placeholders})");
            changed += on_pool!(self, p => {
                let mut q = sqlx::query(sql(text.clone())).bind(now);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(p).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(changed)
    }

    /// Ids of the assets a query selects: every one (`All`), the indexed ones (`Indexed`), those of
    /// a category or of a session's jobs.
    pub async fn asset_ids(&self, which: AssetSelection) -> Result<Vec<AssetId>> {
        let ids: Vec<AssetId> = match which {
            AssetSelection::All => on_pool!(self, p => sqlx::query_scalar("SELECT id FROM image_assets ORDER BY id").fetch_all(p).await)?,
            AssetSelection::Indexed => on_pool!(self, p => sqlx::query_scalar("SELECT id FROM image_assets WHERE indexed_at IS NOT NULL ORDER BY id").fetch_all(p).await)?,
            AssetSelection::Category(c) => on_pool!(self, p => sqlx::query_scalar("SELECT id FROM image_assets WHERE category_id = $1 ORDER BY id").bind(c).fetch_all(p).await)?,
            AssetSelection::Session(s) => on_pool!(self, p => sqlx::query_scalar("SELECT DISTINCT asset_id FROM training_jobs WHERE session_id = $1").bind(s).fetch_all(p).await)?,
        };
        Ok(ids)
    }

    pub async fn log_deletion(&self, new: NewDeletionLog) -> Result<DeletionLog> {
        let row: DeletionRow = on_pool!(self, p => sqlx::query_as(
            "INSERT INTO vector_deletion_logs (deletion_type, target, vector_count, reason, metadata_json, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, deletion_type, target, vector_count, reason, metadata_json, created_at")
            .bind(new.deletion_type.as_str()).bind(&new.target).bind(new.vector_count).bind(&new.reason).bind(Json(&new.metadata)).bind(Utc::now())
            .fetch_one(p).await)?;
        row.try_into()
    }

    /// Newest first.
    pub async fn list_deletion_logs(&self, page: Page) -> Result<Listing<DeletionLog>> {
        let (rows, total): (Vec<DeletionRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(
                "SELECT id, deletion_type, target, vector_count, reason, metadata_json, created_at FROM vector_deletion_logs
                 ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2")
                .bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vector_deletion_logs").fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total })
    }
}
