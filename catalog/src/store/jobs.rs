//! Jobs: one per (session, asset); created, queued, cancelled, and their results recorded in one
//! transaction with the evidence and the session counters (the writer's commit).

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Catalog, JOB_COLUMNS, Result, rows::*, sql};
use crate::{error::CatalogError, model::*};

impl Catalog {
    /// One `pending` job per (session, asset). A job of the session that failed, or was cancelled
    /// before a restart, is opened again (its asset is asked for again: a retry of failures, a
    /// transient failure in a resumed session, a restarted session);
    /// any other existing job is left as it is. Returns how many jobs were made pending; the
    /// session's counters are recounted.
    pub async fn create_jobs(&self, session_id: SessionId, asset_ids: &[AssetId]) -> Result<u64> {
        let created = self.add_jobs(session_id, asset_ids).await?;
        self.recount_session(session_id).await?;
        Ok(created)
    }

    /// `create_jobs` without the recount, for a caller that adds a session's jobs in many calls
    /// (a scan, a chunk at a time) and recounts once at the end with `recount_session`; until
    /// then the session's counters leave these jobs out. 500 jobs a statement.
    pub async fn add_jobs(&self, session_id: SessionId, asset_ids: &[AssetId]) -> Result<u64> {
        const ROWS: usize = 500;
        let now = Utc::now();
        // an asset twice in one statement is an error on PostgreSQL (a row affected twice)
        let mut ids = asset_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut created = 0;
        for chunk in ids.chunks(ROWS) {
            let values = (0..chunk.len()).map(|r| format!("($1, ${}, 'pending', $2, $2)", r + 3)).collect::<Vec<_>>().join(", ");
            let text = format!(
                "INSERT INTO training_jobs (session_id, asset_id, status, created_at, updated_at)
                 VALUES {values}
                 ON CONFLICT (session_id, asset_id) DO UPDATE SET status = 'pending', error_message = NULL,
                     completed_at = NULL, updated_at = excluded.updated_at
                 WHERE training_jobs.status IN ('failed', 'cancelled')"
            );
            let what = || if chunk.len() == 1 { chunk[0].to_string() } else { format!("one of {} assets from {}", chunk.len(), chunk[0]) };
            created += on_pool!(self, p => {
                let mut q = sqlx::query(sql(text.clone())).bind(session_id).bind(now);
                for asset_id in chunk {
                    q = q.bind(*asset_id);
                }
                q.execute(p).await.map_err(|e| CatalogError::from_write(e, "job", &what()))?.rows_affected()
            });
        }
        Ok(created)
    }

    /// Sets the session's counters from its jobs, under its row lock (taken first: see
    /// `RECOUNT_SESSION`).
    pub async fn recount_session(&self, session_id: SessionId) -> Result<()> {
        let now = Utc::now();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(lock_session(self.backend())).bind(session_id).execute(&mut *tx).await?;
            sqlx::query(RECOUNT_SESSION).bind(session_id).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_job(&self, id: JobId) -> Result<Job> {
        let row: Option<JobRow> = on_pool!(self, p => sqlx::query_as(sql(format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = $1")))
            .bind(id).fetch_optional(p).await)?;
        row.map(TryInto::try_into).transpose()?.ok_or_else(|| CatalogError::not_found("job", id))
    }

    /// How many of a session's jobs are in each status, in one query (progress and completion).
    pub async fn count_jobs(&self, session_id: SessionId) -> Result<Vec<(JobStatus, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as("SELECT status, COUNT(*) FROM training_jobs WHERE session_id = $1 GROUP BY status")
            .bind(session_id).fetch_all(p).await)?;
        rows.into_iter().map(|(s, n)| Ok((s.parse().map_err(CatalogError::Corrupt)?, n))).collect()
    }

    /// A session's jobs, optionally in one status, oldest first.
    pub async fn list_jobs(&self, session_id: SessionId, status: Option<JobStatus>, page: Page) -> Result<Listing<Job>> {
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

    /// Up to `limit` of a session's jobs in one of `statuses` whose id is above `after`, by id: a
    /// keyset page. Walking a set that changes under it (writers completing jobs while a session
    /// resumes) with these skips nothing and holds one page at a time; offsets would skip a row
    /// for every row that left the set before it.
    pub async fn jobs_after(&self, session_id: SessionId, statuses: &[JobStatus], after: JobId, limit: i64) -> Result<Vec<Job>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (0..statuses.len()).map(|i| format!("${}", i + 4)).collect::<Vec<_>>().join(", ");
        let text = format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE session_id = $1 AND id > $2 AND status IN ({placeholders}) ORDER BY id LIMIT $3");
        let rows: Vec<JobRow> = on_pool!(self, p => {
            let mut q = sqlx::query_as(sql(text.clone())).bind(session_id).bind(after).bind(limit);
            for s in statuses {
                q = q.bind(s.as_str());
            }
            q.fetch_all(p).await
        })?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The status of each of these jobs, in one query; unknown ids are left out. The writer uses it
    /// to skip results whose job is already finished or was cancelled.
    pub async fn job_statuses(&self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>> {
        Ok(self.job_attempts(ids).await?.into_iter().map(|(id, status, _)| (id, status)).collect())
    }

    /// Puts a session's published and unfinished jobs (`queued`, `running`) back to pending, so they
    /// are published again: after a pause in the distributed wiring the embedders dropped them; a
    /// stalled session's were lost with a worker. Their attempts are kept. Returns how many moved.
    pub async fn requeue_open_jobs(&self, session_id: SessionId) -> Result<u64> {
        let now = Utc::now();
        let moved = on_pool!(self, p => sqlx::query("UPDATE training_jobs SET status = 'pending', updated_at = $2 WHERE session_id = $1 AND status IN ('queued', 'running')")
            .bind(session_id).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(moved)
    }

    /// Records that an embedder started a run of these jobs (`run`, a random id per batch): each
    /// unfinished job moves to `running` and counts one attempt more. A run already counted for a
    /// job (the same report delivered again) is not counted twice. Returns how many were counted.
    pub async fn record_started(&self, run: i64, jobs: &[JobId]) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let placeholders = (0..jobs.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
        let text = format!(
            "UPDATE training_jobs SET status = 'running', attempts = attempts + 1, last_run = $1, started_at = COALESCE(started_at, $2), updated_at = $2
             WHERE id IN ({placeholders}) AND status IN ('pending', 'queued', 'running') AND (last_run IS NULL OR last_run <> $1)"
        );
        let counted = on_pool!(self, p => {
            let mut q = sqlx::query(sql(text.clone())).bind(run).bind(now);
            for id in jobs {
                q = q.bind(*id);
            }
            q.execute(p).await.map(|r| r.rows_affected())
        })?;
        Ok(counted)
    }

    /// Each of these jobs' status and the runs of it that started (`record_started`), in one query;
    /// unknown ids are left out.
    pub async fn job_attempts(&self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus, i32)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let text = format!("SELECT id, status, attempts FROM training_jobs WHERE id IN ({placeholders})");
        let rows: Vec<(JobId, String, i32)> = on_pool!(self, p => {
            let mut q = sqlx::query_as(sql(text.clone()));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await
        })?;
        rows.into_iter().map(|(id, s, n)| Ok((id, s.parse().map_err(CatalogError::Corrupt)?, n))).collect()
    }

    /// Records that jobs were published (with their broker message ids): `pending -> queued`.
    /// Jobs already further along are left alone. Returns how many moved.
    pub async fn mark_jobs_queued(&self, jobs: &[(JobId, String)]) -> Result<u64> {
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

    /// Cancels a job that has not finished; a finished one is `InvalidTransition`.
    pub async fn cancel_job(&self, id: JobId) -> Result<Job> {
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
    /// has its counters moved by the jobs moved. Replaying the same batch changes nothing (see the
    /// module docs). The writer calls this only after the vectors are durable.
    pub async fn record_results(&self, results: &[JobResult]) -> Result<RecordReport> {
        let now = Utc::now();
        let mut report = RecordReport::default();
        // per session touched: (jobs completed, jobs failed) by this batch
        let mut moves: std::collections::BTreeMap<SessionId, (i64, i64)> = Default::default();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for r in results {
                let (status, asset_status, error) = match &r.outcome {
                    JobOutcome::Completed => ("completed", "trained", None),
                    JobOutcome::Failed { error, permanent: true } => ("failed", "failed", Some(error.as_str())),
                    JobOutcome::Failed { error, permanent: false } => ("failed", "pending", Some(error.as_str())),
                };
                let moved: Option<(SessionId, AssetId)> = sqlx::query_as(
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
                let counted = moves.entry(session_id).or_default();
                if status == "completed" { counted.0 += 1 } else { counted.1 += 1 }
            }
            // Each job above moved exactly once (only from an open state), so the counters move
            // by what this batch moved: a cost per batch, where a recount from the jobs grew with
            // the session (quadratic over a run). The UPDATE takes the row lock and, under READ
            // COMMITTED, adds to the newest committed counters; sessions go in id order, so no two
            // writers wait on each other in a cycle. It is a NO KEY UPDATE lock on PostgreSQL: the
            // evidence rows' foreign keys hold KEY SHARE on the session row, which it does not wait
            // for (a FOR UPDATE there deadlocked two writers of one session every time).
            for (session_id, (completed, failed)) in &moves {
                sqlx::query(
                    "UPDATE training_sessions SET processed_images = processed_images + $2, failed_images = failed_images + $3, updated_at = $4
                     WHERE id = $1")
                    .bind(*session_id).bind(*completed).bind(*failed).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(report)
    }
}

/// Sets a session's counters from its jobs. Take `lock_session` first, in a statement of its own:
/// under READ COMMITTED a statement sees what was committed when it began, so a recount that had to
/// wait for the lock would count from before the writer it waited for committed, and miss its jobs.
pub(super) const RECOUNT_SESSION: &str = "UPDATE training_sessions SET
         total_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1),
         processed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'completed'),
         failed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'failed'),
         updated_at = $2
     WHERE id = $1";

/// The statement that takes a session's row lock before its counters are recounted.
pub(super) fn lock_session(backend: &str) -> &'static str {
    match backend {
        // NO KEY UPDATE: evidence rows hold KEY SHARE on the session row (their foreign key)
        "postgres" => "SELECT id FROM training_sessions WHERE id = $1 FOR NO KEY UPDATE",
        // SQLite has one writer at a time: its write lock is the row lock. A write, not a read: a
        // transaction that reads first and writes later cannot wait for another writer (its
        // snapshot would be stale) and fails at once with "database is locked"
        _ => "UPDATE training_sessions SET updated_at = updated_at WHERE id = $1",
    }
}
