//! What every handler shares: the stores, the models, the allowed roots, the sessions running in
//! this process, the metrics.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use catalog::Catalog;
use clip::ClipModel;
use vectors::VectorStore;

use super::{metrics, vector_admin};

/// Everything a handler needs; cheap to share.
pub struct ApiState {
    pub catalog: Catalog,
    pub vectors: Arc<VectorStore>,
    /// The model indexing embeds with, and the collection it writes to (the alias `image_assets`
    /// points at it); a model upgrade through the API replaces both once the alias moved.
    pub(crate) active: std::sync::RwLock<(Arc<ClipModel>, String)>,
    /// Every model this server can embed queries with: a search uses the one that built the
    /// collection the alias points at, so searches keep answering across an upgrade.
    pub(crate) search_models: std::sync::RwLock<Vec<Arc<ClipModel>>>,
    /// The model upgrade running or last run in this process.
    pub(crate) upgrade: Mutex<vector_admin::UpgradeState>,
    /// Sessions may only index directories under these, and only files under them are served;
    /// resolved (links followed) once, when the state is made.
    pub allowed_roots: Vec<PathBuf>,
    /// Starts, pauses and cancels sessions (here, or on the distributed workers).
    pub sessions: Arc<crate::sessions::SessionRunner>,
    pub(crate) metrics: metrics::Metrics,
    /// Where thumbnails are cached; none: made on every request.
    pub thumbnail_dir: Option<PathBuf>,
    /// The origins allowed to call from a browser (`serve --cors-origin`); none by default.
    pub cors: tower_http::cors::CorsLayer,
    /// Who may call what (token, hosts, origins): `guard`.
    pub access: super::guard::Access,
    /// Searches and image work (decode, thumbnails) in flight at most; the next one is answered
    /// 503 with Retry-After, so `/health` and cheap routes keep answering under a flood.
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// The largest image upload (`/search/image`), bytes.
    pub upload_limit: usize,
    /// Where the models an upgrade may load live (the model cache, `serve --model-root`), resolved;
    /// none: upgrades through the API are refused.
    pub model_roots: Vec<PathBuf>,
    /// Connections served at once (`serve --max-connections`), and how long one may send nothing
    /// while the server waits to read (`--idle-timeout-s`): see `conn`.
    pub max_connections: usize,
    pub idle_timeout: std::time::Duration,
}

/// The largest image upload by default: 32 MiB.
pub const DEFAULT_UPLOAD_LIMIT: usize = 32 << 20;

/// Heavy requests in flight by default: two per core.
pub fn default_heavy_limit() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl ApiState {
    /// `thumbnail_dir`: where thumbnails are cached (none: made on every request).
    pub fn new(catalog: Catalog, vectors: Arc<VectorStore>, model: Arc<ClipModel>, collection: String, allowed_roots: Vec<PathBuf>, thumbnail_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(ApiState {
            sessions: crate::sessions::SessionRunner::new(catalog.clone(), vectors.clone(), None),
            catalog,
            vectors,
            search_models: std::sync::RwLock::new(vec![model.clone()]),
            active: std::sync::RwLock::new((model, collection)),
            upgrade: Mutex::new(Default::default()),
            allowed_roots: allowed_roots.into_iter().map(|r| r.canonicalize().unwrap_or(r)).collect(),
            metrics: metrics::Metrics::new(),
            thumbnail_dir,
            cors: super::cors(&[]).expect("no origins is a valid list"),
            access: Default::default(),
            heavy: Arc::new(tokio::sync::Semaphore::new(default_heavy_limit())),
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            model_roots: Vec::new(),
            max_connections: 1000,
            idle_timeout: std::time::Duration::from_secs(30),
        })
    }

    /// Like `new`, for the distributed wiring: started sessions go to the broker's jobs queue.
    pub fn distributed(
        catalog: Catalog,
        vectors: Arc<VectorStore>,
        model: Arc<ClipModel>,
        collection: String,
        allowed_roots: Vec<PathBuf>,
        broker: broker::BrokerConfig,
    ) -> Arc<Self> {
        let mut state = Arc::into_inner(Self::new(catalog.clone(), vectors.clone(), model, collection, allowed_roots, None)).expect("a new state has one owner");
        state.sessions = crate::sessions::SessionRunner::new(catalog, vectors, Some(broker));
        Arc::new(state)
    }

    /// The model indexing embeds with.
    pub fn model(&self) -> Arc<ClipModel> {
        self.active.read().expect("active lock").0.clone()
    }

    /// The collection indexing writes to.
    pub fn collection(&self) -> String {
        self.active.read().expect("active lock").1.clone()
    }

    pub(crate) fn set_active(&self, model: Arc<ClipModel>, collection: String) {
        *self.active.write().expect("active lock") = (model, collection);
    }

    /// Lets searches embed queries with this model too (when a collection it built is searched).
    pub fn add_search_model(&self, model: Arc<ClipModel>) {
        let mut models = self.search_models.write().expect("models lock");
        if !models.iter().any(|m| m.version == model.version) {
            models.push(model);
        }
    }

    /// Stops every running session (pausing it) and waits until their batches are written.
    pub async fn shutdown(&self) {
        self.sessions.shutdown().await;
    }
}
