//! Rows as the drivers return them, and their conversion into the model types.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, types::Json};

use super::Result;
use crate::{error::CatalogError, model::*};

// ---------------------------------------------------------------------------------------------
// rows as the drivers return them, and their conversion into the model

#[derive(FromRow)]
pub(crate) struct CategoryRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) color: Option<String>,
    pub(crate) is_default: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) session_count: i64,
}

impl From<CategoryRow> for Category {
    fn from(r: CategoryRow) -> Self {
        Category {
            id: r.id,
            name: r.name,
            description: r.description,
            color: r.color,
            is_default: r.is_default,
            created_at: r.created_at,
            updated_at: r.updated_at,
            session_count: r.session_count,
        }
    }
}

pub(crate) fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(CatalogError::Corrupt)
}

#[derive(FromRow)]
pub(crate) struct AssetRow {
    pub(crate) id: AssetId,
    pub(crate) path: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) indexed_at: Option<DateTime<Utc>>,
    pub(crate) thumbnail_path: Option<String>,
    pub(crate) width: Option<i32>,
    pub(crate) height: Option<i32>,
    pub(crate) file_size: Option<i64>,
    pub(crate) mime_type: Option<String>,
    pub(crate) file_modified_at: Option<DateTime<Utc>>,
    pub(crate) content_hash: Option<String>,
    pub(crate) category_id: Option<i64>,
    pub(crate) training_status: String,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
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
pub(crate) struct SessionRow {
    pub(crate) id: SessionId,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) root_path: String,
    pub(crate) category_id: Option<i64>,
    pub(crate) total_images: i64,
    pub(crate) processed_images: i64,
    pub(crate) failed_images: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) paused_at: Option<DateTime<Utc>>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) reset_at: Option<DateTime<Utc>>,
    pub(crate) reset_reason: Option<String>,
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
pub(crate) struct JobRow {
    pub(crate) id: JobId,
    pub(crate) session_id: SessionId,
    pub(crate) asset_id: AssetId,
    pub(crate) status: String,
    pub(crate) broker_message_id: Option<String>,
    pub(crate) progress: f64,
    pub(crate) error_message: Option<String>,
    pub(crate) processing_time_ms: Option<i64>,
    pub(crate) attempts: i32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
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
pub(crate) struct EvidenceRow {
    pub(crate) id: i64,
    pub(crate) asset_id: AssetId,
    pub(crate) session_id: SessionId,
    pub(crate) model_name: String,
    pub(crate) model_version: String,
    pub(crate) embedding_checksum: Option<String>,
    pub(crate) device: Option<String>,
    pub(crate) processing_time_ms: Option<i64>,
    pub(crate) error_message: Option<String>,
    pub(crate) metadata_json: Json<serde_json::Value>,
    pub(crate) created_at: DateTime<Utc>,
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
pub(crate) struct DeletionRow {
    pub(crate) id: i64,
    pub(crate) deletion_type: String,
    pub(crate) target: Option<String>,
    pub(crate) vector_count: i64,
    pub(crate) reason: Option<String>,
    pub(crate) metadata_json: Json<serde_json::Value>,
    pub(crate) created_at: DateTime<Utc>,
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
