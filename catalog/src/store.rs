//! The catalog on PostgreSQL or SQLite: one type, one set of SQL statements. Both drivers take
//! `$1, $2, ...` placeholders, `ON CONFLICT` and `RETURNING`, so every method body is written once and
//! compiled for each pool by [`on_pool!`]; only the migrations differ (native types per backend).
//!
//! Why redelivery changes nothing here: assets are keyed by path, jobs by (session, asset), evidence
//! by (session, asset), all written with `ON CONFLICT`; a job moves only forward, and a result for a
//! job already in that terminal state is reported as `already_done` without touching any row. The
//! session counters are recomputed from the jobs inside the same transaction, never incremented, so
//! replaying a batch cannot double count.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{
    FromRow, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    types::Json,
};
use uuid::Uuid;

use crate::{error::CatalogError, model::*};

#[derive(Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$p` bound to whichever pool the catalog has.
macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Postgres($p) => $body,
            Pool::Sqlite($p) => $body,
        }
    };
}

/// The catalog. Cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
}

type Result<T> = std::result::Result<T, CatalogError>;

const ASSET_COLUMNS: &str = "id, path, created_at, indexed_at, thumbnail_path, width, height, file_size, mime_type, file_modified_at, content_hash, category_id, training_status, updated_at, deleted_at";
const SESSION_COLUMNS: &str = "id, name, status, root_path, category_id, total_images, processed_images, failed_images, created_at, updated_at, started_at, paused_at, completed_at, reset_at, reset_reason";
const JOB_COLUMNS: &str = "id, session_id, asset_id, status, broker_message_id, progress, error_message, processing_time_ms, attempts, created_at, updated_at, started_at, completed_at";
const EVIDENCE_COLUMNS: &str = "id, asset_id, session_id, model_name, model_version, embedding_checksum, device, processing_time_ms, error_message, metadata_json, created_at";

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

impl Catalog {
    /// Opens `postgres://...` or `sqlite://PATH` (created if missing) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, None).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Self::connect_sqlite(std::path::Path::new(path)).await
        } else {
            Err(CatalogError::Config(format!("catalog url {url:?} is neither postgres://... nor sqlite://PATH")))
        }
    }

    /// PostgreSQL; with `schema`, every table lives in that schema (created if missing), so tests and
    /// tenants can share one database.
    pub async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url).map_err(|e| CatalogError::Config(e.to_string()))?;
        if let Some(schema) = schema {
            if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(CatalogError::Config(format!("schema name {schema:?} must be letters, digits and _")));
            }
            let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
            sqlx::query(sql(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(&admin).await?;
            admin.close().await;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await.map_err(|e| CatalogError::Migration(e.to_string()))?;
        Ok(Catalog { pool: Pool::Postgres(pool) })
    }

    /// SQLite in one file (WAL mode, foreign keys on), created with its directory if missing.
    pub async fn connect_sqlite(path: &std::path::Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CatalogError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        // SQLite has no migration lock: processes opening a new file at once can both decide to run
        // a migration (the second fails on "table already exists"), or find the file locked while
        // another switches it to WAL or migrates it. Opening again once the other has committed
        // finds it ready.
        let mut attempt = 0u64;
        let pool = loop {
            let opened = async {
                let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await.map_err(CatalogError::from)?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await.map_err(|e| CatalogError::Migration(e.to_string()))?;
                Ok::<_, CatalogError>(pool)
            };
            match opened.await {
                Ok(pool) => break pool,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "opening the catalog raced another process; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt + std::process::id() as u64 % 50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Catalog { pool: Pool::Sqlite(pool) })
    }

    /// Drops a schema made by `connect_postgres(.., Some(schema))`; for test cleanup.
    #[doc(hidden)]
    pub async fn drop_schema_for_tests(&self, schema: &str) {
        if let Pool::Postgres(p) = &self.pool
            && schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let _ = sqlx::query(sql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(p).await;
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    // ----------------------------------------------------------------------------------------
    // categories

    pub async fn create_category(&self, new: NewCategory) -> Result<Category> {
        let now = Utc::now();
        let row: CategoryRow = on_pool!(self, p => sqlx::query_as(
            "INSERT INTO categories (name, description, color, is_default, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             RETURNING id, name, description, color, is_default, created_at, updated_at")
            .bind(&new.name).bind(&new.description).bind(&new.color).bind(new.is_default).bind(now)
            .fetch_one(p).await)
        .map_err(|e| CatalogError::from_write(e, "category", &new.name))?;
        Ok(row.into())
    }

    pub async fn get_category(&self, id: i64) -> Result<Category> {
        let row: Option<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, description, color, is_default, created_at, updated_at FROM categories WHERE id = $1")
            .bind(id).fetch_optional(p).await)?;
        row.map(Into::into).ok_or_else(|| CatalogError::not_found("category", id))
    }

    pub async fn category_by_name(&self, name: &str) -> Result<Option<Category>> {
        let row: Option<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, description, color, is_default, created_at, updated_at FROM categories WHERE name = $1")
            .bind(name).fetch_optional(p).await)?;
        Ok(row.map(Into::into))
    }

    pub async fn list_categories(&self) -> Result<Vec<Category>> {
        let rows: Vec<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, name, description, color, is_default, created_at, updated_at FROM categories ORDER BY name")
            .fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn update_category(&self, id: i64, patch: CategoryPatch) -> Result<Category> {
        let row: Option<CategoryRow> = on_pool!(self, p => sqlx::query_as(
            "UPDATE categories SET name = COALESCE($2, name), description = COALESCE($3, description),
                 color = COALESCE($4, color), is_default = COALESCE($5, is_default), updated_at = $6
             WHERE id = $1
             RETURNING id, name, description, color, is_default, created_at, updated_at")
            .bind(id).bind(&patch.name).bind(&patch.description).bind(&patch.color).bind(patch.is_default).bind(Utc::now())
            .fetch_optional(p).await)
        .map_err(|e| CatalogError::from_write(e, "category", patch.name.as_deref().unwrap_or("")))?;
        row.map(Into::into).ok_or_else(|| CatalogError::not_found("category", id))
    }

    /// Deletes a category; its assets and sessions keep existing without one.
    pub async fn delete_category(&self, id: i64) -> Result<()> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM categories WHERE id = $1").bind(id).execute(p).await?.rows_affected());
        if done == 0 {
            return Err(CatalogError::not_found("category", id));
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // assets

    /// Records the file at `new.path`. A file seen before keeps its id; if its content hash, size or
    /// modification time changed, it goes back to `pending` (it must be embedded again).
    pub async fn upsert_asset(&self, new: NewAsset) -> Result<(Asset, AssetChange)> {
        let now = Utc::now();
        let id = asset_id_for_path(&new.path);
        let existing = self.asset_by_path(&new.path).await?;
        let change = match &existing {
            None => AssetChange::Inserted,
            // a file back after it was found gone is embedded again
            Some(a) if a.deleted_at.is_none() && a.content_hash == new.content_hash && a.file_size == new.file_size && a.file_modified_at == new.file_modified_at => {
                AssetChange::Unchanged
            }
            Some(_) => AssetChange::Changed,
        };
        if change == AssetChange::Unchanged {
            return Ok((existing.expect("unchanged implies existing"), change));
        }
        let row: AssetRow = on_pool!(self, p => sqlx::query_as(sql(format!(
            "INSERT INTO image_assets (id, path, created_at, width, height, file_size, mime_type, file_modified_at,
                 content_hash, category_id, training_status, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11)
             ON CONFLICT (path) DO UPDATE SET width = excluded.width, height = excluded.height,
                 file_size = excluded.file_size, mime_type = excluded.mime_type,
                 file_modified_at = excluded.file_modified_at, content_hash = excluded.content_hash,
                 category_id = COALESCE(excluded.category_id, image_assets.category_id),
                 training_status = 'pending', indexed_at = NULL, deleted_at = NULL, updated_at = excluded.updated_at
             RETURNING {ASSET_COLUMNS}")))
            .bind(id).bind(&new.path).bind(new.created_at.unwrap_or(now)).bind(new.width).bind(new.height)
            .bind(new.file_size).bind(&new.mime_type).bind(new.file_modified_at).bind(&new.content_hash)
            .bind(new.category_id).bind(now)
            .fetch_one(p).await)?;
        Ok((row.try_into()?, change))
    }

    pub async fn get_asset(&self, id: Uuid) -> Result<Asset> {
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
    pub async fn assets_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Asset>> {
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
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let rows: Vec<AssetRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "SELECT {ASSET_COLUMNS} FROM image_assets WHERE substr(path, 1, length($1)) = $1 ORDER BY path")))
            .bind(&prefix).fetch_all(p).await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// How many assets are in each training status, and sessions in each status (`imgsearch status`).
    pub async fn counts(&self) -> Result<Counts> {
        type ByStatus = Vec<(String, i64)>;
        let (assets, sessions, failed_jobs): (ByStatus, ByStatus, i64) = on_pool!(self, p => {
            let a = sqlx::query_as("SELECT training_status, COUNT(*) FROM image_assets GROUP BY training_status").fetch_all(p).await?;
            let s = sqlx::query_as("SELECT status, COUNT(*) FROM training_sessions GROUP BY status").fetch_all(p).await?;
            let f = sqlx::query_scalar("SELECT COUNT(*) FROM training_jobs WHERE status = 'failed'").fetch_one(p).await?;
            (a, s, f)
        });
        Ok(Counts { assets: assets.into_iter().collect(), sessions: sessions.into_iter().collect(), failed_jobs })
    }

    /// The assets marked failed, grouped by the reason of their latest failed job, most frequent
    /// first, with up to `examples` paths each.
    pub async fn failures(&self, examples: usize) -> Result<Vec<FailureGroup>> {
        let rows: Vec<(String, Option<String>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT a.path, j.error_message FROM image_assets a JOIN training_jobs j ON j.asset_id = a.id
             WHERE a.training_status = 'failed' AND j.status = 'failed'
             ORDER BY a.path, j.completed_at DESC")
            .fetch_all(p).await)?;
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
        let (rows, total): (Vec<AssetRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!("SELECT {ASSET_COLUMNS} FROM image_assets ORDER BY path LIMIT $1 OFFSET $2")))
                .bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM image_assets").fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total })
    }

    pub async fn set_training_status(&self, ids: &[Uuid], status: TrainingStatus) -> Result<u64> {
        let now = Utc::now();
        let mut changed = 0;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for id in ids {
                changed += sqlx::query("UPDATE image_assets SET training_status = $2, updated_at = $3 WHERE id = $1")
                    .bind(*id).bind(status.as_str()).bind(now).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(changed)
    }

    // ----------------------------------------------------------------------------------------
    // sessions

    pub async fn create_session(&self, new: NewSession) -> Result<Session> {
        let now = Utc::now();
        let row: SessionRow = on_pool!(self, p => sqlx::query_as(sql(format!(
            "INSERT INTO training_sessions (id, name, status, root_path, category_id, created_at, updated_at)
             VALUES ($1, $2, 'pending', $3, $4, $5, $5) RETURNING {SESSION_COLUMNS}")))
            .bind(Uuid::new_v4()).bind(&new.name).bind(&new.root_path).bind(new.category_id).bind(now)
            .fetch_one(p).await)?;
        row.try_into()
    }

    /// Renames a session or changes its category (`None` leaves a field as it is).
    pub async fn update_session(&self, id: Uuid, name: Option<&str>, category_id: Option<Option<i64>>) -> Result<Session> {
        let current = self.get_session(id).await?;
        let name = name.unwrap_or(&current.name);
        let category = category_id.unwrap_or(current.category_id);
        let row: SessionRow = on_pool!(self, p => sqlx::query_as(sql(format!(
            "UPDATE training_sessions SET name = $2, category_id = $3, updated_at = $4 WHERE id = $1 RETURNING {SESSION_COLUMNS}")))
            .bind(id).bind(name).bind(category).bind(Utc::now()).fetch_one(p).await)?;
        row.try_into()
    }

    /// Deletes a session with its jobs, evidence and subdirectories (the assets and their vectors
    /// stay). A running session is refused: pause or cancel it first.
    pub async fn delete_session(&self, id: Uuid) -> Result<()> {
        let current = self.get_session(id).await?;
        if current.status == SessionStatus::Running {
            return Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: "running".into(), to: "deleted".into() });
        }
        on_pool!(self, p => sqlx::query("DELETE FROM training_sessions WHERE id = $1").bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Puts a finished or paused session back to `pending` to embed its images again: its jobs and
    /// evidence are dropped (the evidence of the new run replaces them), its assets go back to
    /// `pending`, counters to zero, and `reset_at`/`reset_reason` say when and why. One transaction.
    pub async fn restart_session(&self, id: Uuid, reason: Option<&str>) -> Result<Session> {
        let current = self.get_session(id).await?;
        if matches!(current.status, SessionStatus::Running | SessionStatus::Pending) {
            return Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: current.status.to_string(), to: "pending (restart)".into() });
        }
        let now = Utc::now();
        let row: SessionRow = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE image_assets SET training_status = 'pending', updated_at = $2
                         WHERE id IN (SELECT asset_id FROM training_jobs WHERE session_id = $1)")
                .bind(id).bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM training_evidence WHERE session_id = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM training_jobs WHERE session_id = $1").bind(id).execute(&mut *tx).await?;
            let row: Option<SessionRow> = sqlx::query_as(sql(format!(
                "UPDATE training_sessions SET status = 'pending', total_images = 0, processed_images = 0, failed_images = 0,
                     started_at = NULL, paused_at = NULL, completed_at = NULL, reset_at = $2, reset_reason = $3, updated_at = $2
                 WHERE id = $1 AND status = $4 RETURNING {SESSION_COLUMNS}")))
                .bind(id).bind(now).bind(reason).bind(current.status.as_str()).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            row
        }).ok_or_else(|| CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: "changed meanwhile".into(), to: "pending (restart)".into() })?;
        row.try_into()
    }

    pub async fn get_session(&self, id: Uuid) -> Result<Session> {
        let row: Option<SessionRow> = on_pool!(self, p => sqlx::query_as(sql(format!("SELECT {SESSION_COLUMNS} FROM training_sessions WHERE id = $1")))
            .bind(id).fetch_optional(p).await)?;
        row.map(TryInto::try_into).transpose()?.ok_or_else(|| CatalogError::not_found("session", id))
    }

    /// Newest first, optionally only one status.
    pub async fn list_sessions(&self, status: Option<SessionStatus>, page: Page) -> Result<Listing<Session>> {
        let filter = status.map(|s| s.as_str());
        let (rows, total): (Vec<SessionRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!(
                "SELECT {SESSION_COLUMNS} FROM training_sessions WHERE ($1 IS NULL OR status = $1)
                 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3")))
                .bind(filter).bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_sessions WHERE ($1 IS NULL OR status = $1)")
                .bind(filter).fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total })
    }

    /// Moves a session along its state machine; anything else is `InvalidTransition`. The update is
    /// conditional on the state read, so two concurrent transitions cannot both win.
    pub async fn transition_session(&self, id: Uuid, to: SessionStatus) -> Result<Session> {
        let current = self.get_session(id).await?;
        if !current.status.can_move_to(to) {
            return Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: current.status.to_string(), to: to.to_string() });
        }
        let now = Utc::now();
        let (started, paused, completed) = match to {
            SessionStatus::Running => (current.started_at.or(Some(now)), None, None),
            SessionStatus::Paused => (current.started_at, Some(now), None),
            _ => (current.started_at, current.paused_at, Some(now)),
        };
        let row: Option<SessionRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "UPDATE training_sessions SET status = $3, started_at = $4, paused_at = $5, completed_at = $6, updated_at = $7
             WHERE id = $1 AND status = $2 RETURNING {SESSION_COLUMNS}")))
            .bind(id).bind(current.status.as_str()).bind(to.as_str()).bind(started).bind(paused).bind(completed).bind(now)
            .fetch_optional(p).await)?;
        match row {
            Some(row) => row.try_into(),
            None => {
                let now_status = self.get_session(id).await?.status;
                Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: now_status.to_string(), to: to.to_string() })
            }
        }
    }

    /// Records the directories a scan found under a session's root. A directory seen before keeps
    /// its selection and gets the new image count.
    pub async fn upsert_subdirectories(&self, session_id: Uuid, dirs: &[(String, String, i64)]) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (path, name, count) in dirs {
                sqlx::query(
                    "INSERT INTO training_subdirectories (session_id, path, name, selected, image_count, status)
                     VALUES ($1, $2, $3, TRUE, $4, 'pending')
                     ON CONFLICT (session_id, path) DO UPDATE SET name = excluded.name, image_count = excluded.image_count")
                    .bind(session_id).bind(path).bind(name).bind(*count)
                    .execute(&mut *tx).await.map_err(|e| CatalogError::from_write(e, "subdirectory", path))?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn list_subdirectories(&self, session_id: Uuid) -> Result<Vec<Subdirectory>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT session_id, path, name, selected, image_count, status FROM training_subdirectories WHERE session_id = $1 ORDER BY path")
            .bind(session_id).fetch_all(p).await)?)
    }

    /// Selects or deselects one directory of a session; `NotFound` if the scan never saw it.
    pub async fn set_subdirectory_selected(&self, session_id: Uuid, path: &str, selected: bool) -> Result<Subdirectory> {
        let row: Option<Subdirectory> = on_pool!(self, p => sqlx::query_as(
            "UPDATE training_subdirectories SET selected = $3 WHERE session_id = $1 AND path = $2
             RETURNING session_id, path, name, selected, image_count, status")
            .bind(session_id).bind(path).bind(selected).fetch_optional(p).await)?;
        row.ok_or_else(|| CatalogError::not_found("subdirectory", path))
    }

    // ----------------------------------------------------------------------------------------
    // jobs

    /// One `pending` job per (session, asset); assets that already have a job in this session are
    /// skipped. Returns how many jobs were created; the session's total is recounted.
    pub async fn create_jobs(&self, session_id: Uuid, asset_ids: &[Uuid]) -> Result<u64> {
        let now = Utc::now();
        let mut created = 0;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for asset_id in asset_ids {
                created += sqlx::query(
                    "INSERT INTO training_jobs (id, session_id, asset_id, status, created_at, updated_at)
                     VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (session_id, asset_id) DO NOTHING")
                    .bind(Uuid::new_v4()).bind(session_id).bind(*asset_id).bind(now)
                    .execute(&mut *tx).await.map_err(|e| CatalogError::from_write(e, "job", &asset_id.to_string()))?.rows_affected();
            }
            sqlx::query("UPDATE training_sessions SET total_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1), updated_at = $2 WHERE id = $1")
                .bind(session_id).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(created)
    }

    pub async fn get_job(&self, id: Uuid) -> Result<Job> {
        let row: Option<JobRow> = on_pool!(self, p => sqlx::query_as(sql(format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = $1")))
            .bind(id).fetch_optional(p).await)?;
        row.map(TryInto::try_into).transpose()?.ok_or_else(|| CatalogError::not_found("job", id))
    }

    /// How many of a session's jobs are in each status, in one query (progress and completion).
    pub async fn count_jobs(&self, session_id: Uuid) -> Result<Vec<(JobStatus, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as("SELECT status, COUNT(*) FROM training_jobs WHERE session_id = $1 GROUP BY status")
            .bind(session_id).fetch_all(p).await)?;
        rows.into_iter().map(|(s, n)| Ok((s.parse().map_err(CatalogError::Corrupt)?, n))).collect()
    }

    /// A session's jobs, optionally in one status, oldest first.
    pub async fn list_jobs(&self, session_id: Uuid, status: Option<JobStatus>, page: Page) -> Result<Listing<Job>> {
        let filter = status.map(|s| s.as_str());
        let (rows, total): (Vec<JobRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!(
                "SELECT {JOB_COLUMNS} FROM training_jobs WHERE session_id = $1 AND ($2 IS NULL OR status = $2)
                 ORDER BY created_at, id LIMIT $3 OFFSET $4")))
                .bind(session_id).bind(filter).bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND ($2 IS NULL OR status = $2)")
                .bind(session_id).bind(filter).fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?, total })
    }

    /// The status of each of these jobs, in one query; unknown ids are left out. The writer uses it
    /// to skip results whose job is already finished or was cancelled.
    pub async fn job_statuses(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, JobStatus)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let text = format!("SELECT id, status FROM training_jobs WHERE id IN ({placeholders})");
        let rows: Vec<(Uuid, String)> = on_pool!(self, p => {
            let mut q = sqlx::query_as(sql(text.clone()));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await
        })?;
        rows.into_iter().map(|(id, s)| Ok((id, s.parse().map_err(CatalogError::Corrupt)?))).collect()
    }

    /// Puts a session's queued jobs back to pending, so they are published again: after a pause in
    /// the distributed wiring the embedders dropped them. Returns how many moved.
    pub async fn requeue_queued_jobs(&self, session_id: Uuid) -> Result<u64> {
        let now = Utc::now();
        let moved = on_pool!(self, p => sqlx::query("UPDATE training_jobs SET status = 'pending', updated_at = $2 WHERE session_id = $1 AND status = 'queued'")
            .bind(session_id).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(moved)
    }

    /// Records that jobs were published (with their broker message ids): `pending -> queued`.
    /// Jobs already further along are left alone. Returns how many moved.
    pub async fn mark_jobs_queued(&self, jobs: &[(Uuid, String)]) -> Result<u64> {
        let now = Utc::now();
        let mut moved = 0;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (id, message_id) in jobs {
                moved += sqlx::query(
                    "UPDATE training_jobs SET status = 'queued', broker_message_id = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'")
                    .bind(*id).bind(message_id).bind(now).execute(&mut *tx).await?.rows_affected();
                sqlx::query("UPDATE image_assets SET training_status = 'queued', updated_at = $2
                             WHERE id = (SELECT asset_id FROM training_jobs WHERE id = $1) AND training_status = 'pending'")
                    .bind(*id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(moved)
    }

    /// A worker took the job: `pending|queued -> running`, one more attempt. A job already running
    /// (a redelivery) counts another attempt; a terminal job is `InvalidTransition`.
    pub async fn start_job(&self, id: Uuid) -> Result<Job> {
        let now = Utc::now();
        let row: Option<JobRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "UPDATE training_jobs SET status = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, $2), updated_at = $2
             WHERE id = $1 AND status IN ('pending', 'queued', 'running') RETURNING {JOB_COLUMNS}")))
            .bind(id).bind(now).fetch_optional(p).await)?;
        match row {
            Some(row) => row.try_into(),
            None => {
                let job = self.get_job(id).await?;
                Err(CatalogError::InvalidTransition { what: "job", id: id.to_string(), from: job.status.to_string(), to: "running".into() })
            }
        }
    }

    /// Cancels a job that has not finished; a finished one is `InvalidTransition`.
    pub async fn cancel_job(&self, id: Uuid) -> Result<Job> {
        let now = Utc::now();
        let row: Option<JobRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "UPDATE training_jobs SET status = 'cancelled', completed_at = $2, updated_at = $2
             WHERE id = $1 AND status IN ('pending', 'queued', 'running') RETURNING {JOB_COLUMNS}")))
            .bind(id).bind(now).fetch_optional(p).await)?;
        match row {
            Some(row) => row.try_into(),
            None => {
                let job = self.get_job(id).await?;
                Err(CatalogError::InvalidTransition { what: "job", id: id.to_string(), from: job.status.to_string(), to: "cancelled".into() })
            }
        }
    }

    /// Records a batch of job results in one transaction: each job moves to completed or failed,
    /// its evidence is written, its asset's `indexed_at` and status set, and every session touched
    /// gets its counters recounted from its jobs. Replaying the same batch changes nothing (see the
    /// module docs). The writer calls this only after the vectors are durable.
    pub async fn record_results(&self, results: &[JobResult]) -> Result<RecordReport> {
        let now = Utc::now();
        let mut report = RecordReport::default();
        let mut sessions: Vec<Uuid> = Vec::new();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for r in results {
                let (status, asset_status, error) = match &r.outcome {
                    JobOutcome::Completed => ("completed", "trained", None),
                    JobOutcome::Failed { error, permanent: true } => ("failed", "failed", Some(error.as_str())),
                    JobOutcome::Failed { error, permanent: false } => ("failed", "pending", Some(error.as_str())),
                };
                let moved: Option<(Uuid, Uuid)> = sqlx::query_as(
                    "UPDATE training_jobs SET status = $2, error_message = $3, processing_time_ms = $4, progress = 1,
                         completed_at = $5, updated_at = $5
                     WHERE id = $1 AND status IN ('pending', 'queued', 'running')
                     RETURNING session_id, asset_id")
                    .bind(r.job_id).bind(status).bind(error).bind(r.processing_time_ms).bind(now)
                    .fetch_optional(&mut *tx).await?;
                let Some((session_id, asset_id)) = moved else {
                    let current: Option<String> = sqlx::query_scalar("SELECT status FROM training_jobs WHERE id = $1")
                        .bind(r.job_id).fetch_optional(&mut *tx).await?;
                    match current {
                        Some(s) if s == status => report.already_done.push(r.job_id),
                        Some(s) => report.refused.push((r.job_id, format!("job is {s}"))),
                        None => report.refused.push((r.job_id, "no such job".into())),
                    }
                    continue;
                };
                let ev = &r.evidence;
                sqlx::query(
                    "INSERT INTO training_evidence (asset_id, session_id, model_name, model_version, embedding_checksum, device,
                         processing_time_ms, error_message, metadata_json, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (session_id, asset_id) DO NOTHING")
                    .bind(asset_id).bind(session_id).bind(&ev.model_name).bind(&ev.model_version).bind(&ev.embedding_checksum)
                    .bind(&ev.device).bind(r.processing_time_ms).bind(error).bind(Json(&ev.metadata)).bind(now)
                    .execute(&mut *tx).await?;
                let indexed_at: Option<DateTime<Utc>> = (status == "completed").then_some(now);
                sqlx::query("UPDATE image_assets SET training_status = $2, indexed_at = COALESCE($3, indexed_at), updated_at = $4 WHERE id = $1")
                    .bind(asset_id).bind(asset_status).bind(indexed_at).bind(now).execute(&mut *tx).await?;
                report.applied.push(r.job_id);
                if !sessions.contains(&session_id) {
                    sessions.push(session_id);
                }
            }
            for session_id in &sessions {
                sqlx::query(
                    "UPDATE training_sessions SET
                         processed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'completed'),
                         failed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'failed'),
                         updated_at = $2
                     WHERE id = $1")
                    .bind(*session_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(report)
    }

    // ----------------------------------------------------------------------------------------
    // evidence

    pub async fn evidence_for_asset(&self, asset_id: Uuid) -> Result<Vec<Evidence>> {
        let rows: Vec<EvidenceRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "SELECT {EVIDENCE_COLUMNS} FROM training_evidence WHERE asset_id = $1 ORDER BY created_at, id")))
            .bind(asset_id).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn evidence_for_session(&self, session_id: Uuid, page: Page) -> Result<Listing<Evidence>> {
        let (rows, total): (Vec<EvidenceRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!(
                "SELECT {EVIDENCE_COLUMNS} FROM training_evidence WHERE session_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3")))
                .bind(session_id).bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_evidence WHERE session_id = $1").bind(session_id).fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(Into::into).collect(), total })
    }

    // ----------------------------------------------------------------------------------------
    // deletion logs

    /// Marks assets as not indexed (their vectors were deleted): `pending`, no `indexed_at`, so the
    /// next scan embeds them again. Returns how many changed.
    pub async fn mark_unindexed(&self, ids: &[Uuid]) -> Result<u64> {
        self.unindex_assets(ids, "").await
    }

    /// Marks assets whose file is gone from disk: `deleted_at` set, not indexed (their vectors were
    /// removed). A scan that finds the file again clears it. Returns how many changed.
    pub async fn mark_deleted(&self, ids: &[Uuid]) -> Result<u64> {
        self.unindex_assets(ids, "deleted_at = $1, ").await
    }

    /// `pending`, no `indexed_at`, plus `also` (more `SET` assignments; `$1` is now), in chunks.
    async fn unindex_assets(&self, ids: &[Uuid], also: &str) -> Result<u64> {
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
    pub async fn asset_ids(&self, which: AssetSelection) -> Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = match which {
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

// ---------------------------------------------------------------------------------------------
// rows as the drivers return them, and their conversion into the model

#[derive(FromRow)]
struct CategoryRow {
    id: i64,
    name: String,
    description: Option<String>,
    color: Option<String>,
    is_default: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CategoryRow> for Category {
    fn from(r: CategoryRow) -> Self {
        Category { id: r.id, name: r.name, description: r.description, color: r.color, is_default: r.is_default, created_at: r.created_at, updated_at: r.updated_at }
    }
}

fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(CatalogError::Corrupt)
}

#[derive(FromRow)]
struct AssetRow {
    id: Uuid,
    path: String,
    created_at: DateTime<Utc>,
    indexed_at: Option<DateTime<Utc>>,
    thumbnail_path: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    file_size: Option<i64>,
    mime_type: Option<String>,
    file_modified_at: Option<DateTime<Utc>>,
    content_hash: Option<String>,
    category_id: Option<i64>,
    training_status: String,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl TryFrom<AssetRow> for Asset {
    type Error = CatalogError;
    fn try_from(r: AssetRow) -> Result<Self> {
        Ok(Asset {
            id: r.id,
            path: r.path,
            created_at: r.created_at,
            indexed_at: r.indexed_at,
            thumbnail_path: r.thumbnail_path,
            width: r.width,
            height: r.height,
            file_size: r.file_size,
            mime_type: r.mime_type,
            file_modified_at: r.file_modified_at,
            content_hash: r.content_hash,
            category_id: r.category_id,
            training_status: parse(&r.training_status)?,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        })
    }
}

#[derive(FromRow)]
struct SessionRow {
    id: Uuid,
    name: String,
    status: String,
    root_path: String,
    category_id: Option<i64>,
    total_images: i64,
    processed_images: i64,
    failed_images: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    reset_at: Option<DateTime<Utc>>,
    reset_reason: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = CatalogError;
    fn try_from(r: SessionRow) -> Result<Self> {
        Ok(Session {
            id: r.id,
            name: r.name,
            status: parse(&r.status)?,
            root_path: r.root_path,
            category_id: r.category_id,
            total_images: r.total_images,
            processed_images: r.processed_images,
            failed_images: r.failed_images,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            paused_at: r.paused_at,
            completed_at: r.completed_at,
            reset_at: r.reset_at,
            reset_reason: r.reset_reason,
        })
    }
}

#[derive(FromRow)]
struct JobRow {
    id: Uuid,
    session_id: Uuid,
    asset_id: Uuid,
    status: String,
    broker_message_id: Option<String>,
    progress: f64,
    error_message: Option<String>,
    processing_time_ms: Option<i64>,
    attempts: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<JobRow> for Job {
    type Error = CatalogError;
    fn try_from(r: JobRow) -> Result<Self> {
        Ok(Job {
            id: r.id,
            session_id: r.session_id,
            asset_id: r.asset_id,
            status: parse(&r.status)?,
            broker_message_id: r.broker_message_id,
            progress: r.progress,
            error_message: r.error_message,
            processing_time_ms: r.processing_time_ms,
            attempts: r.attempts,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
        })
    }
}

#[derive(FromRow)]
struct EvidenceRow {
    id: i64,
    asset_id: Uuid,
    session_id: Uuid,
    model_name: String,
    model_version: String,
    embedding_checksum: Option<String>,
    device: Option<String>,
    processing_time_ms: Option<i64>,
    error_message: Option<String>,
    metadata_json: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
}

impl From<EvidenceRow> for Evidence {
    fn from(r: EvidenceRow) -> Self {
        Evidence {
            id: r.id,
            asset_id: r.asset_id,
            session_id: r.session_id,
            model_name: r.model_name,
            model_version: r.model_version,
            embedding_checksum: r.embedding_checksum,
            device: r.device,
            processing_time_ms: r.processing_time_ms,
            error_message: r.error_message,
            metadata: r.metadata_json.0,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
struct DeletionRow {
    id: i64,
    deletion_type: String,
    target: Option<String>,
    vector_count: i64,
    reason: Option<String>,
    metadata_json: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
}

impl TryFrom<DeletionRow> for DeletionLog {
    type Error = CatalogError;
    fn try_from(r: DeletionRow) -> Result<Self> {
        Ok(DeletionLog {
            id: r.id,
            deletion_type: parse(&r.deletion_type)?,
            target: r.target,
            vector_count: r.vector_count,
            reason: r.reason,
            metadata: r.metadata_json.0,
            created_at: r.created_at,
        })
    }
}
