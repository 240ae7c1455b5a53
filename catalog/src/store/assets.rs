//! Image assets: one row per file path, its change detection, listings, counts and failures.

use chrono::Utc;

use super::{ASSET_COLUMNS, Catalog, Result, rows::*, sql};
use crate::{error::CatalogError, model::*};

/// `imgsearch status`'s statements: both are served by the partial index of failed jobs
/// (migration 0007), so they cost what the failures do, not what the corpus does (at a million
/// jobs, scans of the table took 1 s and 5.5 s).
const FAILED_JOBS: &str = "SELECT COUNT(*) FROM training_jobs WHERE status = 'failed'";
const FAILURES: &str = "SELECT a.path, j.error_message FROM image_assets a JOIN training_jobs j ON j.asset_id = a.id
     WHERE a.training_status = 'failed' AND j.status = 'failed'
     ORDER BY a.path, j.completed_at DESC";

impl Catalog {
    /// Records the file at `new.path`. A file seen before keeps its id; if its content hash, size or
    /// modification time changed, it goes back to `pending` (it must be embedded again).
    pub async fn upsert_asset(&self, new: NewAsset) -> Result<(Asset, AssetChange)> {
        let change = match self.asset_by_path(&new.path).await? {
            None => AssetChange::Inserted,
            Some(a) if a.is_unchanged(&new) => return Ok((a, AssetChange::Unchanged)),
            Some(_) => AssetChange::Changed,
        };
        let row = self.record_assets(std::slice::from_ref(&new)).await?.pop().ok_or_else(|| CatalogError::not_found("asset", &new.path))?;
        Ok((row, change))
    }

    /// Records new or changed files, many rows per statement (a scan's batches; `upsert_asset` is
    /// the one-file form): each goes (back) to `pending` with the same id as before if its path is
    /// known. Returns the rows, in no particular order.
    pub async fn record_assets(&self, new: &[NewAsset]) -> Result<Vec<Asset>> {
        // 10 values a row: 500 rows stay far below SQLite's and PostgreSQL's bind limits
        const ROWS: usize = 500;
        let now = Utc::now();
        let mut out = Vec::with_capacity(new.len());
        for chunk in new.chunks(ROWS) {
            let values = (0..chunk.len())
                .map(|r| {
                    let b = r * 10;
                    format!("(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let text = format!(
                "INSERT INTO image_assets (path, created_at, width, height, file_size, mime_type, file_modified_at,
                     content_hash, category_id, training_status, updated_at)
                 VALUES {values}
                 ON CONFLICT (path) DO UPDATE SET width = excluded.width, height = excluded.height,
                     file_size = excluded.file_size, mime_type = excluded.mime_type,
                     file_modified_at = excluded.file_modified_at, content_hash = excluded.content_hash,
                     category_id = COALESCE(excluded.category_id, image_assets.category_id),
                     training_status = 'pending', indexed_at = NULL, deleted_at = NULL, updated_at = excluded.updated_at
                 RETURNING {ASSET_COLUMNS}"
            );
            let rows: Vec<AssetRow> = on_pool!(self, p => {
                let mut q = sqlx::query_as(sql(text.clone()));
                for a in chunk {
                    q = q.bind(&a.path).bind(a.created_at.unwrap_or(now)).bind(a.width).bind(a.height).bind(a.file_size).bind(&a.mime_type)
                        .bind(a.file_modified_at).bind(&a.content_hash).bind(a.category_id).bind(now);
                }
                q.fetch_all(p).await
            })?;
            for row in rows {
                out.push(row.try_into()?);
            }
        }
        Ok(out)
    }

    pub async fn get_asset(&self, id: AssetId) -> Result<Asset> {
        let row: Option<AssetRow> = on_pool!(self, p => sqlx::query_as(sql(format!("SELECT {ASSET_COLUMNS} FROM image_assets WHERE id = $1")))
            .bind(id).fetch_optional(p).await)?;
        row.map(TryInto::try_into).transpose()?.ok_or_else(|| CatalogError::not_found("asset", id))
    }

    pub async fn asset_by_path(&self, path: &str) -> Result<Option<Asset>> {
        let row: Option<AssetRow> = on_pool!(self, p => sqlx::query_as(sql(format!("SELECT {ASSET_COLUMNS} FROM image_assets WHERE path = $1")))
            .bind(path).fetch_optional(p).await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// The assets with these ids, in one query (search results are hydrated with it); unknown ids
    /// are left out.
    pub async fn assets_by_ids(&self, ids: &[AssetId]) -> Result<Vec<Asset>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let text = format!("SELECT {ASSET_COLUMNS} FROM image_assets WHERE id IN ({placeholders})");
        let rows: Vec<AssetRow> = on_pool!(self, p => {
            let mut q = sqlx::query_as(sql(text.clone()));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await
        })?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Every asset under a directory (its whole subtree), by path. A scan compares them with the
    /// files it found to notice deleted ones.
    pub async fn assets_under(&self, dir: &str) -> Result<Vec<Asset>> {
        let (from, to) = subtree(dir);
        let rows: Vec<AssetRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "SELECT {ASSET_COLUMNS} FROM image_assets WHERE path >= $1 AND path < $2 ORDER BY path")))
            .bind(&from).bind(&to).fetch_all(p).await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// How many assets are in each training status, and sessions in each status (`imgsearch status`).
    pub async fn counts(&self) -> Result<Counts> {
        type ByStatus = Vec<(String, i64)>;
        let (assets, sessions, failed_jobs): (ByStatus, ByStatus, i64) = on_pool!(self, p => {
            let a = sqlx::query_as("SELECT training_status, COUNT(*) FROM image_assets GROUP BY training_status").fetch_all(p).await?;
            let s = sqlx::query_as("SELECT status, COUNT(*) FROM training_sessions GROUP BY status").fetch_all(p).await?;
            let f = sqlx::query_scalar(FAILED_JOBS).fetch_one(p).await?;
            (a, s, f)
        });
        Ok(Counts { assets: assets.into_iter().collect(), sessions: sessions.into_iter().collect(), failed_jobs })
    }

    /// The assets marked failed, grouped by the reason of their latest failed job, most frequent
    /// first, with up to `examples` paths each.
    pub async fn failures(&self, examples: usize) -> Result<Vec<FailureGroup>> {
        let rows: Vec<(String, Option<String>)> = on_pool!(self, p => sqlx::query_as(FAILURES).fetch_all(p).await)?;
        let mut groups: Vec<FailureGroup> = Vec::new();
        let mut last_path: Option<String> = None;
        for (path, error) in rows {
            // the latest job of each asset comes first
            if last_path.as_deref() == Some(path.as_str()) {
                continue;
            }
            let reason = error.as_deref().and_then(|e| e.split_once(':')).map(|(r, _)| r.trim()).unwrap_or("unknown").to_owned();
            let group = match groups.iter_mut().position(|g| g.reason == reason) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(FailureGroup { reason, count: 0, examples: Vec::new() });
                    groups.last_mut().expect("just pushed")
                }
            };
            group.count += 1;
            if group.examples.len() < examples {
                group.examples.push(path.clone());
            }
            last_path = Some(path);
        }
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        Ok(groups)
    }

    pub async fn list_assets(&self, page: Page) -> Result<Listing<Asset>> {
        self.list_assets_created(page, None, None).await
    }

    /// A page of the assets created (taken) in `[from, to]`, either end open, by path.
    pub async fn list_assets_created(&self, page: Page, from: Option<chrono::DateTime<Utc>>, to: Option<chrono::DateTime<Utc>>) -> Result<Listing<Asset>> {
        let within = "($1 IS NULL OR created_at >= $1) AND ($2 IS NULL OR created_at <= $2)";
        let (rows, total): (Vec<AssetRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!("SELECT {ASSET_COLUMNS} FROM image_assets WHERE {within} ORDER BY path LIMIT $3 OFFSET $4")))
                .bind(from).bind(to).bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar(sql(format!("SELECT COUNT(*) FROM image_assets WHERE {within}"))).bind(from).bind(to).fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total })
    }

    /// How many assets under a directory (its whole subtree) have a vector, and when the last one
    /// was indexed.
    pub async fn indexed_under(&self, dir: &str) -> Result<(i64, Option<chrono::DateTime<Utc>>)> {
        let (from, to) = subtree(dir);
        let under = "path >= $1 AND path < $2 AND indexed_at IS NOT NULL AND deleted_at IS NULL";
        on_pool!(self, p => {
            let count: i64 = sqlx::query_scalar(sql(format!("SELECT COUNT(*) FROM image_assets WHERE {under}"))).bind(&from).bind(&to).fetch_one(p).await?;
            let last: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(sql(format!("SELECT indexed_at FROM image_assets WHERE {under} ORDER BY indexed_at DESC LIMIT 1")))
                .bind(&from).bind(&to).fetch_optional(p).await?;
            Ok((count, last))
        })
    }
}

/// The stored paths under `dir` (its whole subtree) as a range of the path index: from `dir/` up
/// to, not including, `dir0` ('0' is the byte after '/'). Paths compare byte by byte: SQLite's
/// default, and the path column's collation ("C") on PostgreSQL, whatever the database's.
fn subtree(dir: &str) -> (String, String) {
    let dir = dir.trim_end_matches('/');
    (format!("{dir}/"), format!("{dir}0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite plans without statistics, by the indexes alone, so its plan on an empty file is its
    /// plan at a million rows (PostgreSQL's are checked on a filled catalog by bench/scale.sh
    /// --distributed).
    #[tokio::test]
    async fn status_statements_do_not_scan_the_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::connect_sqlite(&dir.path().join("catalog.sqlite")).await.unwrap();
        let super::super::Pool::Sqlite(pool) = &catalog.pool else { unreachable!() };
        for statement in [FAILED_JOBS, FAILURES] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sql(format!("EXPLAIN QUERY PLAN {statement}"))).fetch_all(pool).await.unwrap();
            let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert!(plan.iter().any(|step| step.contains("training_jobs_failed")), "{statement}: {plan:?}");
            assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{statement}: {plan:?}");
        }
    }
}
