//! Training sessions and the subdirectories they index: creation, the state machine, restart.

use chrono::Utc;

use super::{Catalog, Result, SESSION_COLUMNS, rows::*, sql};
use crate::{error::CatalogError, model::*};

impl Catalog {
    pub async fn create_session(&self, new: NewSession) -> Result<Session> {
        let now = Utc::now();
        let row: SessionRow = on_pool!(self, p => sqlx::query_as(sql(format!(
            "INSERT INTO training_sessions (name, status, root_path, category_id, created_at, updated_at)
             VALUES ($1, 'pending', $2, $3, $4, $4) RETURNING {SESSION_COLUMNS}")))
            .bind(&new.name).bind(&new.root_path).bind(new.category_id).bind(now)
            .fetch_one(p).await)?;
        row.try_into()
    }

    /// Renames a session or changes its category (`None` leaves a field as it is).
    pub async fn update_session(&self, id: SessionId, name: Option<&str>, category_id: Option<Option<i64>>) -> Result<Session> {
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
    pub async fn delete_session(&self, id: SessionId) -> Result<()> {
        let current = self.get_session(id).await?;
        if current.status == SessionStatus::Running {
            return Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: "running".into(), to: "deleted".into() });
        }
        on_pool!(self, p => sqlx::query("DELETE FROM training_sessions WHERE id = $1").bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Puts a finished or paused session back to `pending`, to embed its images again on start.
    /// All of them: its jobs and evidence are dropped (the evidence of the new run replaces them),
    /// its assets go back to `pending` and its counters to zero. With `failed_only`, only the
    /// images whose job failed or was cancelled: their evidence is dropped and their assets go back
    /// to `pending` (so the next start asks for them again, and reopens their jobs); jobs still
    /// queued are made pending (published again); completed ones are kept.
    /// `reset_at`/`reset_reason` say when and why. One transaction; returns the session and how
    /// many images will be embedded again.
    pub async fn restart_session(&self, id: SessionId, reason: Option<&str>, failed_only: bool) -> Result<(Session, i64)> {
        let current = self.get_session(id).await?;
        if matches!(current.status, SessionStatus::Running | SessionStatus::Pending) {
            return Err(CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: current.status.to_string(), to: "pending (restart)".into() });
        }
        let now = Utc::now();
        // failed_only: the images that did not complete (failed, or cancelled with the session)
        let jobs = if failed_only {
            "SELECT asset_id FROM training_jobs WHERE session_id = $1 AND status IN ('failed', 'cancelled')"
        } else {
            "SELECT asset_id FROM training_jobs WHERE session_id = $1"
        };
        let (row, again): (Option<SessionRow>, i64) = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let again = sqlx::query(sql(format!("UPDATE image_assets SET training_status = 'pending', updated_at = $2 WHERE id IN ({jobs})")))
                .bind(id).bind(now).execute(&mut *tx).await?.rows_affected() as i64;
            sqlx::query(sql(format!("DELETE FROM training_evidence WHERE session_id = $1 AND asset_id IN ({jobs})"))).bind(id).execute(&mut *tx).await?;
            if failed_only {
                // jobs published before a pause were dropped by the embedders: published again on start
                sqlx::query("UPDATE training_jobs SET status = 'pending', updated_at = $2 WHERE session_id = $1 AND status IN ('queued', 'running')")
                    .bind(id).bind(now).execute(&mut *tx).await?;
            } else {
                sqlx::query("DELETE FROM training_jobs WHERE session_id = $1").bind(id).execute(&mut *tx).await?;
            }
            // the counters are recounted after the row lock, in a statement of their own (see
            // `jobs::RECOUNT_SESSION`): a writer still committing results adds to them after
            sqlx::query(super::jobs::lock_session(self.backend())).bind(id).execute(&mut *tx).await?;
            let row: Option<SessionRow> = sqlx::query_as(sql(format!(
                "UPDATE training_sessions SET status = 'pending',
                     total_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1),
                     processed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'completed'),
                     failed_images = 0,
                     started_at = NULL, paused_at = NULL, completed_at = NULL, reset_at = $2, reset_reason = $3, updated_at = $2
                 WHERE id = $1 AND status = $4 RETURNING {SESSION_COLUMNS}")))
                .bind(id).bind(now).bind(reason).bind(current.status.as_str()).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            (row, again)
        });
        let row = row.ok_or_else(|| CatalogError::InvalidTransition { what: "session", id: id.to_string(), from: "changed meanwhile".into(), to: "pending (restart)".into() })?;
        Ok((row.try_into()?, again))
    }

    pub async fn get_session(&self, id: SessionId) -> Result<Session> {
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
    pub async fn transition_session(&self, id: SessionId, to: SessionStatus) -> Result<Session> {
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
    pub async fn upsert_subdirectories(&self, session_id: SessionId, dirs: &[(String, String, i64)]) -> Result<()> {
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

    pub async fn list_subdirectories(&self, session_id: SessionId) -> Result<Vec<Subdirectory>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT session_id, path, name, selected, image_count, status FROM training_subdirectories WHERE session_id = $1 ORDER BY path")
            .bind(session_id).fetch_all(p).await)?)
    }

    /// Selects or deselects one directory of a session; `NotFound` if the scan never saw it.
    pub async fn set_subdirectory_selected(&self, session_id: SessionId, path: &str, selected: bool) -> Result<Subdirectory> {
        let row: Option<Subdirectory> = on_pool!(self, p => sqlx::query_as(
            "UPDATE training_subdirectories SET selected = $3 WHERE session_id = $1 AND path = $2
             RETURNING session_id, path, name, selected, image_count, status")
            .bind(session_id).bind(path).bind(selected).fetch_optional(p).await)?;
        row.ok_or_else(|| CatalogError::not_found("subdirectory", path))
    }
}
