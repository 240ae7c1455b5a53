//! The vector store: CLIP vectors with their asset payload, on Qdrant.
//!
//! Two backends behind one type: embedded Qdrant (`qdrant-edge`, the default, one shard directory
//! per collection under the data dir) and the Qdrant server over gRPC (distributed mode). This is the
//! only crate that talks to Qdrant; it never holds SQL. Point ids are asset ids, so an upsert
//! replayed after a crash overwrites the same point.

mod edge;
mod error;
pub mod model;
mod server;

use std::{collections::HashMap, path::Path};

pub use error::VectorError;
pub use model::*;
use protocol::AssetId;

type Result<T> = std::result::Result<T, VectorError>;

enum Backend {
    Edge(edge::EdgeStore),
    Server(Box<server::ServerStore>),
}

/// Scroll page size: large enough to be quick, small enough to bound memory per call.
const SCROLL_PAGE: usize = 1_000;

/// Runs `$body` with `$b` bound to the backend.
macro_rules! on_backend {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.backend {
            Backend::Edge($b) => $body,
            Backend::Server($b) => $body,
        }
    };
}

pub struct VectorStore {
    backend: Backend,
}

impl VectorStore {
    /// The embedded store under `data_dir` (created if missing).
    pub fn embedded(data_dir: &Path) -> Result<Self> {
        Ok(VectorStore { backend: Backend::Edge(edge::EdgeStore::open(data_dir)?) })
    }

    /// The Qdrant server at `url` (gRPC, e.g. `http://127.0.0.1:6334`). Connects lazily: an
    /// unreachable server is reported as `VectorError::Unavailable` by the first call.
    pub fn server(url: &str) -> Result<Self> {
        Ok(VectorStore { backend: Backend::Server(Box::new(server::ServerStore::connect(url)?)) })
    }

    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Edge(_) => "embedded",
            Backend::Server(_) => "server",
        }
    }

    /// Whether the store answers (`/ready`); the embedded store always does once open.
    pub async fn health(&self) -> Result<()> {
        match &self.backend {
            Backend::Edge(_) => Ok(()),
            Backend::Server(b) => b.health().await,
        }
    }

    /// Creates the collection with its payload indexes, or checks that the existing one has the same
    /// size and distance (a mismatch is an error, never a silent recreate). True when created.
    pub async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<bool> {
        on_backend!(self, b => b.ensure_collection(spec).await)
    }

    /// Upserts a batch and returns once it is durable.
    pub async fn upsert(&self, collection: &str, points: Vec<AssetPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.upsert(collection, points).await)
    }

    /// Nearest points by cosine, best first, after skipping `offset`. A collection (or alias) that
    /// does not exist yet gives an empty result.
    pub async fn search(&self, collection: &str, vector: &[f32], filter: &PointFilter, limit: usize, offset: usize) -> Result<Vec<Hit>> {
        on_backend!(self, b => b.search(collection, vector.to_vec(), filter, limit, offset).await)
    }

    pub async fn retrieve(&self, collection: &str, ids: &[AssetId], with_vectors: bool) -> Result<Vec<StoredPoint>> {
        on_backend!(self, b => b.retrieve(collection, ids, with_vectors).await)
    }

    pub async fn count(&self, collection: &str, filter: &PointFilter) -> Result<u64> {
        on_backend!(self, b => b.count(collection, filter).await)
    }

    /// Deletes these points; returns how many existed.
    pub async fn delete_ids(&self, collection: &str, ids: &[AssetId]) -> Result<u64> {
        on_backend!(self, b => b.delete_ids(collection, ids).await)
    }

    /// Soft delete (`deleted: true`, with `deleted_at`) or restore (`deleted: false`) these points:
    /// searches never return a soft-deleted point, which keeps its vector until a hard delete.
    /// Returns how many of the points exist.
    pub async fn set_deleted(&self, collection: &str, ids: &[AssetId], deleted: bool) -> Result<u64> {
        let mut payload = serde_json::Map::new();
        payload.insert(model::DELETED_KEY.into(), deleted.into());
        payload.insert("deleted_at".into(), if deleted { chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into() } else { serde_json::Value::Null });
        on_backend!(self, b => b.set_payload(collection, ids, payload).await)
    }

    /// Every point id of the collection, following the scroll to its end.
    pub async fn scroll_ids(&self, collection: &str) -> Result<Vec<AssetId>> {
        on_backend!(self, b => b.scroll_ids(collection, SCROLL_PAGE).await)
    }

    /// The collection a name (or alias) resolves to, with its size and model: what a search needs,
    /// without `info`'s counts (an exact count of the points is a pass over them all).
    pub async fn spec(&self, collection: &str) -> Result<Option<CollectionSpec>> {
        on_backend!(self, b => b.spec(collection).await)
    }

    /// The collection a name (or alias) resolves to, with its size, model and point count.
    pub async fn info(&self, collection: &str) -> Result<Option<CollectionInfo>> {
        on_backend!(self, b => b.info(collection).await)
    }

    /// Points `alias` at `collection` in one atomic step (creating or swapping it).
    pub async fn set_alias(&self, alias: &str, collection: &str) -> Result<()> {
        on_backend!(self, b => b.set_alias(alias, collection).await)
    }

    pub async fn aliases(&self) -> Result<HashMap<String, String>> {
        on_backend!(self, b => b.aliases().await)
    }

    pub async fn list_collections(&self) -> Result<Vec<String>> {
        on_backend!(self, b => b.list_collections().await)
    }

    /// Drops a collection no alias points at; false if it did not exist.
    pub async fn drop_collection(&self, collection: &str) -> Result<bool> {
        on_backend!(self, b => b.drop_collection(collection).await)
    }

    /// Builds the vector index now instead of waiting for the background optimize.
    pub async fn optimize(&self, collection: &str) -> Result<()> {
        on_backend!(self, b => b.optimize(collection).await)
    }

    /// Reads the collection's files once, so the page cache holds them before searches touch them
    /// (the embedded engine maps them cold: without this, the first searches of a filter or of a
    /// region of the graph wait on the disk). Returns the bytes read; the server warms its own.
    pub async fn warm(&self, collection: &str) -> Result<u64> {
        match &self.backend {
            Backend::Edge(b) => b.warm(collection).await,
            Backend::Server(_) => Ok(0),
        }
    }
}
