//! The catalog's records and their state machines. No SQL here (a record whose columns map one to
//! one derives `FromRow`).

use chrono::{DateTime, Utc};
pub use protocol::{AssetId, JobId, SessionId};
use serde::Serialize;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        /// Written in JSON as it is stored.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        // by hand: the derive does not see a `serde(rename)` whose text comes from a macro
        // argument, and documented the variant names instead of what is sent
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where an asset stands with respect to the vector store.
    TrainingStatus { Pending = "pending", Queued = "queued", Training = "training", Trained = "trained", Failed = "failed" }
);

text_enum!(
    /// `pending -> running <-> paused -> completed | cancelled | failed`.
    SessionStatus { Pending = "pending", Running = "running", Paused = "paused", Completed = "completed", Cancelled = "cancelled", Failed = "failed" }
);

text_enum!(
    /// `pending -> queued -> running -> completed | failed | cancelled`, only forward.
    JobStatus { Pending = "pending", Queued = "queued", Running = "running", Completed = "completed", Failed = "failed", Cancelled = "cancelled" }
);

text_enum!(
    DeletionType { Asset = "ASSET", Directory = "DIRECTORY", Session = "SESSION", Category = "CATEGORY", Orphan = "ORPHAN", FullReset = "FULL_RESET" }
);

impl SessionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Completed | SessionStatus::Cancelled | SessionStatus::Failed)
    }

    /// The session state machine. Moving to the state it is already in is not a transition.
    pub fn can_move_to(self, next: SessionStatus) -> bool {
        use SessionStatus::*;
        matches!((self, next), (Pending, Running) | (Running, Paused) | (Paused, Running) | (Running | Paused, Completed) | (Pending | Running | Paused, Cancelled | Failed))
    }
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub color: Option<String>,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sessions in this category.
    pub session_count: i64,
}

#[derive(Debug, Clone, Default)]
pub struct NewCategory {
    pub name: String,
    pub description: Option<String>,
    pub color: Option<String>,
    pub is_default: bool,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CategoryPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub color: Option<String>,
    pub is_default: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub id: AssetId,
    pub path: String,
    pub created_at: DateTime<Utc>,
    pub indexed_at: Option<DateTime<Utc>>,
    pub thumbnail_path: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub file_size: Option<i64>,
    pub mime_type: Option<String>,
    pub file_modified_at: Option<DateTime<Utc>>,
    pub content_hash: Option<String>,
    pub category_id: Option<i64>,
    pub training_status: TrainingStatus,
    pub updated_at: DateTime<Utc>,
    /// When a scan found the file gone from disk (its vector was removed then); none while it is there.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Asset {
    /// Whether `new` is the file this asset records, unchanged: same content hash, size and
    /// modification time, and not found gone since (a file back after it was gone is embedded again).
    pub fn is_unchanged(&self, new: &NewAsset) -> bool {
        self.deleted_at.is_none() && self.content_hash == new.content_hash && self.file_size == new.file_size && self.file_modified_at == new.file_modified_at
    }
}

/// What a scan learned about a file. The catalog gives a new path its id.
#[derive(Debug, Clone, Default)]
pub struct NewAsset {
    pub path: String,
    /// When the picture was taken or the file created; search filters on it.
    pub created_at: Option<DateTime<Utc>>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub file_size: Option<i64>,
    pub mime_type: Option<String>,
    pub file_modified_at: Option<DateTime<Utc>>,
    pub content_hash: Option<String>,
    pub category_id: Option<i64>,
}

/// What `upsert_asset` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetChange {
    Inserted,
    /// The file at this path changed (hash, size or mtime): it needs embedding again.
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub root_path: String,
    pub category_id: Option<i64>,
    pub total_images: i64,
    pub processed_images: i64,
    pub failed_images: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub reset_at: Option<DateTime<Utc>>,
    pub reset_reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub name: String,
    pub root_path: String,
    pub category_id: Option<i64>,
}

/// A directory under a session's root, and whether the session indexes it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subdirectory {
    pub session_id: SessionId,
    pub path: String,
    pub name: String,
    pub selected: bool,
    pub image_count: i64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub session_id: SessionId,
    pub asset_id: AssetId,
    pub status: JobStatus,
    pub broker_message_id: Option<String>,
    pub progress: f64,
    pub error_message: Option<String>,
    pub processing_time_ms: Option<i64>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub id: i64,
    pub asset_id: AssetId,
    pub session_id: SessionId,
    pub model_name: String,
    pub model_version: String,
    pub embedding_checksum: Option<String>,
    pub device: Option<String>,
    pub processing_time_ms: Option<i64>,
    pub error_message: Option<String>,
    /// `image`, `embedding`, `environment` and `timing` sections.
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The evidence a worker produced for one job.
#[derive(Debug, Clone, Default)]
pub struct NewEvidence {
    pub model_name: String,
    pub model_version: String,
    pub embedding_checksum: Option<String>,
    pub device: Option<String>,
    pub metadata: serde_json::Value,
}

/// The end of one job, as the writer records it.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: JobId,
    pub outcome: JobOutcome,
    pub processing_time_ms: Option<i64>,
    pub evidence: NewEvidence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Completed,
    /// `permanent`: the file itself is bad, so its asset is `failed` and an unchanged file is not
    /// tried again; otherwise (I/O, the runtime) the asset goes back to `pending` for the next run.
    Failed {
        error: String,
        permanent: bool,
    },
}

/// What `record_results` did with each job of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordReport {
    /// Jobs moved to completed or failed, with evidence written.
    pub applied: Vec<JobId>,
    /// Jobs already in the state the result asks for: a redelivery, nothing changed.
    pub already_done: Vec<JobId>,
    /// Jobs in another terminal state (e.g. cancelled), or unknown: nothing changed.
    pub refused: Vec<(JobId, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionLog {
    pub id: i64,
    pub deletion_type: DeletionType,
    pub target: Option<String>,
    pub vector_count: i64,
    pub reason: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Which assets `Catalog::asset_ids` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetSelection {
    All,
    /// Assets with an `indexed_at`: their vector should be in the store.
    Indexed,
    Category(i64),
    /// The assets of a session's jobs.
    Session(SessionId),
}

#[derive(Debug, Clone)]
pub struct NewDeletionLog {
    pub deletion_type: DeletionType,
    pub target: Option<String>,
    pub vector_count: i64,
    pub reason: Option<String>,
    pub metadata: serde_json::Value,
}

/// Counts by status, for `imgsearch status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// training status -> assets
    pub assets: std::collections::BTreeMap<String, i64>,
    /// session status -> sessions
    pub sessions: std::collections::BTreeMap<String, i64>,
    pub failed_jobs: i64,
}

/// Assets whose last attempt failed permanently, for one reason (`imgsearch status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureGroup {
    /// The fixed label before the first `:` of the job's error (`corrupt`, `too_large`, ...).
    pub reason: String,
    /// Assets (not jobs: an asset tried twice counts once).
    pub count: i64,
    /// Up to the asked number of paths, in path order.
    pub examples: Vec<String>,
}

/// A page of a listing: `offset` rows skipped, at most `limit` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

impl Page {
    pub fn new(offset: i64, limit: i64) -> Self {
        Page { offset: offset.max(0), limit: limit.clamp(1, 1000) }
    }
}

/// A listing and the total it is a page of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub total: i64,
}
