//! What the vector store holds and answers, independent of the backend.

use chrono::{DateTime, Utc};
use protocol::AssetId;
use serde::{Deserialize, Serialize};

/// The default name searches use: an alias that points at `image_assets_v{N}`.
pub const DEFAULT_COLLECTION: &str = "image_assets";

/// A collection to create or check: CLIP vectors of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    /// Vector size, taken from the model (512 for ViT-B-32).
    pub dim: usize,
    /// The model version that fills this collection; searches must embed with the same one.
    pub model_version: String,
}

/// What is known about an existing collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dim: usize,
    pub distance: String,
    pub model_version: Option<String>,
    pub points: u64,
    /// Points whose vector is in the HNSW index (the rest are searched by a scan of their
    /// segment: a few thousand at most once the store has optimized).
    pub indexed_vectors: u64,
    /// The payload fields with an index, sorted.
    pub payload_indexes: Vec<String>,
}

/// The kind of a payload index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Datetime,
    Integer,
    Keyword,
    Bool,
}

/// Every payload field a search or a delete filters on, with its index: without one, a filtered
/// search checks every point (the soft-delete flag is in every search's filter).
pub const PAYLOAD_INDEXES: [(&str, IndexKind); 4] =
    [("created_at", IndexKind::Datetime), ("category_id", IndexKind::Integer), ("path_dirs", IndexKind::Keyword), (DELETED_KEY, IndexKind::Bool)];

/// One asset's vector and the payload every point carries.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetPoint {
    /// The point id is the asset id.
    pub asset_id: AssetId,
    pub vector: Vec<f32>,
    pub path: String,
    pub created_at: DateTime<Utc>,
    pub category_id: Option<i64>,
    pub model_version: String,
}

impl AssetPoint {
    /// The payload as stored: `asset_id` (string), `path`, `path_dirs` (every ancestor directory, for
    /// prefix filters), `created_at` (RFC 3339, UTC), `category_id` (when set), `model_version`.
    pub fn payload(&self) -> serde_json::Value {
        let mut p = serde_json::json!({
            "asset_id": self.asset_id.to_string(),
            "path": self.path,
            "path_dirs": path_dirs(&self.path),
            "created_at": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "model_version": self.model_version,
        });
        if let Some(c) = self.category_id {
            p["category_id"] = c.into();
        }
        p
    }
}

/// Every ancestor directory of a path: `/a/b/c.jpg` -> `["/a", "/a/b"]`. A prefix filter on a
/// directory is then an exact keyword match, served by a keyword index on both backends.
pub fn path_dirs(path: &str) -> Vec<String> {
    path.char_indices().filter(|&(i, c)| c == '/' && i > 0).map(|(i, _)| path[..i].to_owned()).collect()
}

/// Normalizes a directory prefix the way `path_dirs` stores it (no trailing slash).
pub fn dir_key(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() { "/".into() } else { trimmed.to_owned() }
}

/// Conditions a search, count or delete is limited to; all present ones must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointFilter {
    /// `created_at >= from` (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// `created_at <= to` (inclusive).
    pub to: Option<DateTime<Utc>>,
    pub category_id: Option<i64>,
    /// Only points under this directory.
    pub path_prefix: Option<String>,
}

impl PointFilter {
    pub fn is_empty(&self) -> bool {
        *self == PointFilter::default()
    }

    /// The filter in Qdrant's JSON filter form.
    pub fn to_qdrant_json(&self) -> serde_json::Value {
        let mut must = Vec::new();
        if self.from.is_some() || self.to.is_some() {
            let mut range = serde_json::Map::new();
            if let Some(from) = self.from {
                range.insert("gte".into(), from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
            }
            if let Some(to) = self.to {
                range.insert("lte".into(), to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
            }
            must.push(serde_json::json!({"key": "created_at", "range": range}));
        }
        if let Some(c) = self.category_id {
            must.push(serde_json::json!({"key": "category_id", "match": {"value": c}}));
        }
        if let Some(prefix) = &self.path_prefix {
            must.push(serde_json::json!({"key": "path_dirs", "match": {"value": dir_key(prefix)}}));
        }
        serde_json::json!({ "must": must })
    }

    /// The filter searches use: these conditions, and never a soft-deleted point.
    pub fn to_qdrant_search_json(&self) -> serde_json::Value {
        let mut f = self.to_qdrant_json();
        f["must_not"] = serde_json::json!([{"key": DELETED_KEY, "match": {"value": true}}]);
        f
    }
}

/// The payload flag of a soft-deleted point (with `deleted_at`): searches never return it.
pub const DELETED_KEY: &str = "deleted";

/// A search result: the point and how close it is (cosine similarity).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub asset_id: AssetId,
    pub score: f32,
    pub path: Option<String>,
    pub created_at: Option<String>,
    pub category_id: Option<i64>,
    pub model_version: Option<String>,
}

/// A stored point, as `retrieve` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub asset_id: AssetId,
    pub vector: Option<Vec<f32>>,
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_dirs_lists_every_ancestor() {
        let check = |path: &str, expected: &[&str]| assert_eq!(path_dirs(path), expected, "{path}");
        check("/a/b/c.jpg", &["/a", "/a/b"]);
        check("/c.jpg", &[]);
        check("rel/x.png", &["rel"]);
        assert_eq!(dir_key("/a/b/"), "/a/b");
    }

    #[test]
    fn filter_is_qdrant_json() {
        let f = PointFilter { from: Some("2024-01-01T00:00:00Z".parse().unwrap()), to: None, category_id: Some(3), path_prefix: Some("/photos/2024/".into()) };
        assert_eq!(
            f.to_qdrant_json(),
            serde_json::json!({"must": [
                {"key": "created_at", "range": {"gte": "2024-01-01T00:00:00.000000Z"}},
                {"key": "category_id", "match": {"value": 3}},
                {"key": "path_dirs", "match": {"value": "/photos/2024"}},
            ]})
        );
    }
}
