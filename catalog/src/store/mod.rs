//! The catalog on PostgreSQL or SQLite: one type, one set of SQL statements. Both drivers take
//! `$1, $2, ...` placeholders, `ON CONFLICT` and `RETURNING`, so every method body is written once and
//! compiled for each pool by [`on_pool!`]; only the migrations differ (native types per backend).
//!
//! Why redelivery changes nothing here: assets are keyed by path, jobs by (session, asset), evidence
//! by (session, asset), all written with `ON CONFLICT`; a job moves only forward, and a result for a
//! job already in that terminal state is reported as `already_done` without touching any row. The
//! session counters move, inside the same transaction, by the jobs it moved, so replaying a batch
//! (which moves none) cannot double count. Whatever moves a finished job back to open (`add_jobs`
//! reopening failed ones, a restart) recounts the session from its jobs, after its row lock.

use std::str::FromStr;

use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};

use crate::error::CatalogError;

#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$p` bound to whichever pool the catalog has.
macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            $crate::store::Pool::Postgres($p) => $body,
            $crate::store::Pool::Sqlite($p) => $body,
        }
    };
}

/// The catalog. Cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
}

pub(crate) type Result<T> = std::result::Result<T, CatalogError>;

pub(crate) const ASSET_COLUMNS: &str =
    "id, path, created_at, indexed_at, thumbnail_path, width, height, file_size, mime_type, file_modified_at, content_hash, category_id, training_status, updated_at, deleted_at";
pub(crate) const SESSION_COLUMNS: &str =
    "id, name, status, root_path, category_id, total_images, processed_images, failed_images, created_at, updated_at, started_at, paused_at, completed_at, reset_at, reset_reason";
pub(crate) const JOB_COLUMNS: &str =
    "id, session_id, asset_id, status, broker_message_id, progress, error_message, processing_time_ms, attempts, created_at, updated_at, started_at, completed_at";
pub(crate) const EVIDENCE_COLUMNS: &str =
    "id, asset_id, session_id, model_name, model_version, embedding_checksum, device, processing_time_ms, error_message, metadata_json, created_at";

pub(crate) fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// Whether the catalog behind `pool` was migrated by a version before 4 (UUID ids): those
/// migrations are gone from this build, and its rows would be misread. A new database has no
/// migrations table, which is not an old catalog.
async fn made_before_integer_ids<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> bool
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let Ok(mut conn) = pool.acquire().await else { return false };
    sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM _sqlx_migrations WHERE version < 4").fetch_one(&mut *conn).await.map(|(n,)| n > 0).unwrap_or(false)
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
            // CREATE SCHEMA IF NOT EXISTS is not safe against itself: two at once, one fails on a
            // duplicate key. Processes starting together on a new schema take turns.
            let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
            let mut tx = admin.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7306990312883051877)").execute(&mut *tx).await?;
            sqlx::query(sql(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(&mut *tx).await?;
            tx.commit().await?;
            admin.close().await;
            options = options.options([("search_path", schema)]);
        }
        // `imgsearch:{schema}` in pg_stat_activity: an operator (or a test) can tell whose connections are whose
        options = options.application_name(&format!("imgsearch:{}", schema.unwrap_or("public")));
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(std::time::Duration::from_secs(10)).connect_with(options).await?;
        if made_before_integer_ids(&pool).await {
            return Err(CatalogError::Outdated(format!(
                "this catalog ({}) was made by an imgsearch before 0.2 (UUID ids), which this version does not read; index again into a new database or schema (or drop the old schema's tables) and run the coordinator again",
                schema.unwrap_or("public")
            )));
        }
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
                if made_before_integer_ids(&pool).await {
                    return Err(CatalogError::Outdated(format!(
                        "{} was made by an imgsearch before 0.2 (UUID ids), which this version does not read; move its data dir aside and run `imgsearch index` on your folders again",
                        path.display()
                    )));
                }
                sqlx::migrate!("migrations/sqlite").run(&pool).await.map_err(|e| CatalogError::Migration(e.to_string()))?;
                Ok::<_, CatalogError>(pool)
            };
            match opened.await {
                Ok(pool) => break pool,
                Err(e @ CatalogError::Outdated(_)) => return Err(e),
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
}

mod assets;
mod categories;
mod deletions;
mod evidence;
mod jobs;
mod rows;
mod sessions;
