//! Evidence: what made each embedding (model, device, timings, image metadata), by asset or session.

use super::{Catalog, EVIDENCE_COLUMNS, Result, rows::*, sql};
use crate::model::*;

impl Catalog {
    pub async fn evidence_for_asset(&self, asset_id: AssetId) -> Result<Vec<Evidence>> {
        let rows: Vec<EvidenceRow> = on_pool!(self, p => sqlx::query_as(sql(format!(
            "SELECT {EVIDENCE_COLUMNS} FROM training_evidence WHERE asset_id = $1 ORDER BY created_at, id")))
            .bind(asset_id).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn evidence_for_session(&self, session_id: SessionId, page: Page) -> Result<Listing<Evidence>> {
        let (rows, total): (Vec<EvidenceRow>, i64) = on_pool!(self, p => {
            let rows = sqlx::query_as(sql(format!(
                "SELECT {EVIDENCE_COLUMNS} FROM training_evidence WHERE session_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3")))
                .bind(session_id).bind(page.limit).bind(page.offset).fetch_all(p).await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_evidence WHERE session_id = $1").bind(session_id).fetch_one(p).await?;
            (rows, total)
        });
        Ok(Listing { items: rows.into_iter().map(Into::into).collect(), total })
    }
}
