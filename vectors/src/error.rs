//! The vector store's errors. `Unavailable` is the one the API answers with 503; a missing collection
//! on search is not an error (an empty result).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector store unavailable: {0}; check that Qdrant is running and reachable")]
    Unavailable(String),
    #[error("collection {0:?} does not exist")]
    NoCollection(String),
    #[error("collection {name:?} holds {existing} vectors, not {wanted}; use another collection name (it is never recreated silently)")]
    Mismatch { name: String, existing: String, wanted: String },
    #[error("invalid vector store request: {0}")]
    InvalidRequest(String),
    #[error("vector store failed to {action}: {reason}")]
    Backend { action: &'static str, reason: String },
    #[error("the vector store in {0} is in use by another process (another `imgsearch index` or `serve` on this data directory); stop it, or use another --data-dir")]
    InUse(PathBuf),
    #[error("vector store file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
