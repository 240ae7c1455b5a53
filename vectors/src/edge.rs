//! The embedded backend: Qdrant's engine in-process (`qdrant-edge`).
//!
//! An edge shard is one directory with no notion of collections or aliases, so this backend keeps
//! `collections/{name}/` (the shard) and `collections/{name}.json` (its spec) under the data dir,
//! and the aliases in `aliases.json`, replaced by an atomic rename. Shards are opened once and kept
//! (qdrant-edge allows one opener per directory); its calls are synchronous, so they run on tokio's
//! blocking pool. HNSW is only built by an explicit `optimize()`, which runs in the background once
//! enough points were written since the last one.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use protocol::AssetId;
use qdrant_edge::{
    BoolIndexParamsBuilder, CountRequestBuilder, CreateIndex, DatetimeIndexParamsBuilder, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldIndexOperations,
    Filter, HnswIndexConfig, IntegerIndexParamsBuilder, JsonPath, KeywordIndexParamsBuilder, Memory, NamedQuery, Payload, PayloadFieldSchema, PayloadOps, PayloadSchemaParams,
    PointId, PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, QueryRequestBuilder, RetrieveRequestBuilder, ScoringQuery, ScrollRequestBuilder,
    SetPayloadOp, UpdateOperation, VectorInternal, VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde::{Deserialize, Serialize};

use crate::{error::VectorError, model::*};

type Result<T> = std::result::Result<T, VectorError>;

/// Points written since the last optimize after which a background optimize starts.
const OPTIMIZE_AFTER_POINTS: usize = 2_000;

/// A segment larger than this (KB) gets an HNSW index. The engine's default, 10 MB, is per
/// segment: points spread over several segments, so 50,000 64-d vectors (13 MB) were never
/// indexed and every search scanned them all. Below 1 MB (500 512-d vectors) a scan is as quick.
const INDEXING_THRESHOLD_KB: usize = 1_000;

/// The write-ahead log's segment size. Opening a shard reads its WAL files whole (to find the
/// operations the segments lack), and the engine keeps the newest closed one plus the open ones:
/// at its 32 MiB default that was 72 MB read by every process that opens the store, most of a
/// cold CLI search at a million images (0.64 s; 0.31 s warm). An upsert batch larger than this
/// gets a segment of its own size.
const WAL_SEGMENT_BYTES: usize = 4 << 20;

fn wal_options() -> qdrant_edge::WalOptions {
    qdrant_edge::WalOptions { segment_capacity: WAL_SEGMENT_BYTES, ..Default::default() }
}

fn optimizers() -> qdrant_edge::EdgeOptimizersConfig {
    qdrant_edge::EdgeOptimizersConfig { indexing_threshold: Some(INDEXING_THRESHOLD_KB), ..Default::default() }
}

struct Collection {
    shard: Arc<EdgeShard>,
    spec: StoredSpec,
    /// Serializes writes that must read then write (delete by filter returns its count).
    write_lock: tokio::sync::Mutex<()>,
    written_since_optimize: AtomicUsize,
    /// Held while an optimize runs: the background one skips when it is taken, an explicit one
    /// waits for it (an optimize beside a running one skips the segments that one holds, and
    /// returned with them still unindexed).
    optimizing: Arc<Mutex<()>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSpec {
    dim: usize,
    distance: String,
    model_version: String,
}

pub(crate) struct EdgeStore {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<Collection>>>,
    /// Taken to open a shard (see `collection`).
    opening: tokio::sync::Mutex<()>,
    /// Serializes collection creation and alias changes.
    admin: tokio::sync::Mutex<()>,
}

fn edge_err(action: &'static str) -> impl Fn(qdrant_edge::OperationError) -> VectorError {
    move |e| VectorError::Backend { action, reason: e.to_string() }
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(VectorError::InvalidRequest(format!("collection name {name:?} must be letters, digits, _ and -")));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| VectorError::Backend { action: "run a blocking task", reason: e.to_string() })?
}

impl EdgeStore {
    pub(crate) fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("collections")).map_err(|e| VectorError::Io { path: root.to_owned(), source: e })?;
        Ok(EdgeStore { root: root.to_owned(), open: Mutex::new(HashMap::new()), opening: tokio::sync::Mutex::new(()), admin: tokio::sync::Mutex::new(()) })
    }

    fn shard_dir(&self, name: &str) -> PathBuf {
        self.root.join("collections").join(name)
    }

    fn spec_file(&self, name: &str) -> PathBuf {
        self.root.join("collections").join(format!("{name}.json"))
    }

    fn aliases_file(&self) -> PathBuf {
        self.root.join("aliases.json")
    }

    fn read_aliases(&self) -> Result<HashMap<String, String>> {
        match std::fs::read_to_string(self.aliases_file()) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| VectorError::Backend { action: "read aliases.json", reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(VectorError::Io { path: self.aliases_file(), source: e }),
        }
    }

    /// Replaces aliases.json atomically: write a temporary file, fsync, rename over the old one.
    fn write_aliases(&self, aliases: &HashMap<String, String>) -> Result<()> {
        let path = self.aliases_file();
        let tmp = path.with_extension("json.tmp");
        let io = |source| VectorError::Io { path: tmp.clone(), source };
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(serde_json::to_string_pretty(aliases).expect("aliases serialize").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(|source| VectorError::Io { path, source })
    }

    /// The collection a name means: an alias's target, or the name itself.
    pub(crate) fn resolve(&self, name: &str) -> Result<String> {
        Ok(self.read_aliases()?.get(name).cloned().unwrap_or_else(|| name.to_owned()))
    }

    /// An open collection, or `None` if it does not exist.
    async fn collection(&self, name: &str) -> Result<Option<Arc<Collection>>> {
        let name = self.resolve(name)?;
        if let Some(c) = self.open.lock().expect("collections lock").get(&name) {
            return Ok(Some(c.clone()));
        }
        // one opener at a time, checking again once it has the turn: two first callers at once
        // (serve's start-up optimize and a search) would otherwise both load the shard, and the
        // second find it locked; the load (a WAL replay) runs on the blocking pool, so callers of
        // collections already open are never held behind it
        let _opening = self.opening.lock().await;
        if let Some(c) = self.open.lock().expect("collections lock").get(&name) {
            return Ok(Some(c.clone()));
        }
        let spec_path = self.spec_file(&name);
        let Ok(text) = std::fs::read_to_string(&spec_path) else {
            return Ok(None);
        };
        let spec: StoredSpec = serde_json::from_str(&text).map_err(|e| VectorError::Backend { action: "read a collection spec", reason: e.to_string() })?;
        let (dir, root) = (self.shard_dir(&name), self.root.clone());
        // the WAL size given again: a shard made before it was set takes it on (its segments
        // written from now on are the small ones); everything else as the shard was made
        let wal = EdgeConfigBuilder::new().wal_options(wal_options()).build();
        // qdrant-edge locks a shard's WAL: a second process on the same directory gets WouldBlock
        let shard = blocking(move || {
            EdgeShard::load(&dir, Some(wal)).map_err(|e| if e.to_string().contains("WouldBlock") { VectorError::InUse(root) } else { edge_err("open a shard")(e) })
        })
        .await?;
        let c = Arc::new(Collection {
            shard: Arc::new(shard),
            spec,
            write_lock: tokio::sync::Mutex::new(()),
            written_since_optimize: AtomicUsize::new(0),
            optimizing: Arc::new(Mutex::new(())),
        });
        self.open.lock().expect("collections lock").insert(name, c.clone());
        Ok(Some(c))
    }

    async fn existing(&self, name: &str) -> Result<Arc<Collection>> {
        self.collection(name).await?.ok_or_else(|| VectorError::NoCollection(name.to_owned()))
    }

    pub(crate) async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<bool> {
        valid_name(&spec.name)?;
        let _admin = self.admin.lock().await;
        if let Some(c) = self.collection(&spec.name).await? {
            if c.spec.dim != spec.dim || c.spec.distance != "cosine" {
                return Err(VectorError::Mismatch { name: spec.name.clone(), existing: format!("{}-d {}", c.spec.dim, c.spec.distance), wanted: format!("{}-d cosine", spec.dim) });
            }
            // a collection made by an older version may lack an index added since
            let shard = c.shard.clone();
            blocking(move || ensure_payload_indexes(&shard)).await?;
            return Ok(false);
        }
        let dir = self.shard_dir(&spec.name);
        std::fs::create_dir_all(&dir).map_err(|source| VectorError::Io { path: dir.clone(), source })?;
        // vectors, their HNSW graph and the payload indexes are memory-mapped and paged in as
        // searches touch them (`Memory::Cold`): opening a shard reads none of them (the CLI's
        // one search does not load the corpus), the page cache keeps what serve searches use,
        // and a corpus larger than memory still opens. The payload is on disk by default.
        // The point ids are the exception: opening a shard checks every point's id and version,
        // so they are read whole anyway, and `Cold` had that done one 4 KiB page fault at a time
        // (0.3 s of a 0.6 s CLI search at a million images, cold). `Cached` reads them in bulk
        // into the page cache at open (40 ms for the same 24 MB), still evictable, not the heap.
        let vectors = EdgeVectorParamsBuilder::new(spec.dim, Distance::Cosine).memory(Memory::Cold).build();
        let hnsw = HnswIndexConfig { memory: Some(Memory::Cold), ..Default::default() };
        let config = EdgeConfigBuilder::new().vector("", vectors).hnsw_config(hnsw).id_tracker_memory(Memory::Cached).optimizers(optimizers()).wal_options(wal_options()).build();
        let shard = EdgeShard::new(&dir, config).map_err(edge_err("create a shard"))?;
        ensure_payload_indexes(&shard)?;
        drop(shard);
        let stored = StoredSpec { dim: spec.dim, distance: "cosine".into(), model_version: spec.model_version.clone() };
        // the spec file is written last: a crash before it leaves no half-made collection visible
        let spec_path = self.spec_file(&spec.name);
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&stored).expect("spec serializes")).map_err(|source| VectorError::Io { path: spec_path, source })?;
        Ok(true)
    }

    pub(crate) async fn upsert(&self, name: &str, points: Vec<AssetPoint>) -> Result<()> {
        let c = self.existing(name).await?;
        for p in &points {
            if p.vector.len() != c.spec.dim {
                return Err(VectorError::InvalidRequest(format!("vector of asset {} has {} values, the collection takes {}", p.asset_id, p.vector.len(), c.spec.dim)));
            }
        }
        let n = points.len();
        let _w = c.write_lock.lock().await;
        let shard = c.shard.clone();
        blocking(move || {
            let list = points
                .into_iter()
                .map(|p| {
                    let payload = match p.payload() {
                        serde_json::Value::Object(map) => Payload(map),
                        _ => unreachable!("payload is an object"),
                    };
                    PointStructPersisted { id: point_id(p.asset_id), vector: VectorStructInternal::Single(p.vector).into(), payload: Some(payload) }
                })
                .collect();
            shard.update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(PointInsertOperations::PointsList(list)))).map_err(edge_err("upsert points"))?;
            // durable before we return: the writer acks after this
            shard.flush().map_err(edge_err("flush"))
        })
        .await?;
        if c.written_since_optimize.fetch_add(n, Ordering::Relaxed) + n >= OPTIMIZE_AFTER_POINTS {
            self.optimize_in_background(&c);
        }
        Ok(())
    }

    fn optimize_in_background(&self, c: &Arc<Collection>) {
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            let _running = match c.optimizing.try_lock() {
                Ok(running) => running,
                // an optimize that panicked left nothing half done that the next one cannot redo
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                // one already runs: the next write past the threshold starts another
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            c.written_since_optimize.store(0, Ordering::Relaxed);
            if let Err(e) = c.shard.optimize() {
                tracing::warn!(error = %e, "background optimize of the embedded vector store failed");
            }
        });
    }

    /// Builds the HNSW index of every segment over the threshold now, after any background
    /// optimize has finished (`imgsearch index` before it returns, `serve` at start).
    pub(crate) async fn optimize(&self, name: &str) -> Result<()> {
        let c = self.existing(name).await?;
        let (shard, lock) = (c.shard.clone(), c.optimizing.clone());
        blocking(move || {
            let _running = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            shard.optimize().map(|_| ()).map_err(edge_err("optimize"))
        })
        .await
    }

    pub(crate) async fn warm(&self, name: &str) -> Result<u64> {
        let dir = self.shard_dir(&self.resolve(name)?);
        blocking(move || {
            let (mut read, mut buf) = (0, vec![0u8; 1 << 20]);
            // the write-ahead log is only read to recover, at open; a file or folder the engine
            // replaces meanwhile is skipped
            let files = walkdir::WalkDir::new(dir).into_iter().filter_entry(|e| e.file_name() != qdrant_edge::WAL_PATH).flatten().filter(|e| e.file_type().is_file());
            for entry in files {
                let Ok(mut file) = std::fs::File::open(entry.path()) else { continue };
                while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut buf) {
                    read += n as u64;
                }
            }
            Ok(read)
        })
        .await
    }

    pub(crate) async fn search(&self, name: &str, vector: Vec<f32>, filter: &PointFilter, limit: usize, offset: usize) -> Result<Vec<Hit>> {
        let Some(c) = self.collection(name).await? else {
            return Ok(Vec::new());
        };
        if vector.len() != c.spec.dim {
            return Err(VectorError::InvalidRequest(format!("query vector has {} values, the collection takes {}", vector.len(), c.spec.dim)));
        }
        let mut req = QueryRequestBuilder::new(limit)
            .offset(offset)
            .query(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery { query: VectorInternal::Dense(vector), using: None })))
            .with_payload(WithPayloadInterface::Bool(true));
        let never_deleted: Filter = serde_json::from_value(filter.to_qdrant_search_json()).map_err(|e| VectorError::InvalidRequest(format!("filter: {e}")))?;
        req = req.filter(never_deleted);
        let req = req.build();
        let shard = c.shard.clone();
        let points = blocking(move || shard.query(req).map_err(edge_err("search"))).await?;
        points.into_iter().map(|p| hit(p.id, p.score, p.payload)).collect()
    }

    /// Sets payload keys on these points (the others keep theirs); returns how many exist.
    pub(crate) async fn set_payload(&self, name: &str, ids: &[AssetId], payload: serde_json::Map<String, serde_json::Value>) -> Result<u64> {
        let Some(c) = self.collection(name).await? else {
            return Ok(0);
        };
        let _w = c.write_lock.lock().await;
        // setting a payload on a point that does not exist is an error: only the ones there
        let points: Vec<PointId> = self.retrieve(name, ids, false).await?.into_iter().map(|p| point_id(p.asset_id)).collect();
        let existing = points.len() as u64;
        if existing == 0 {
            return Ok(0);
        }
        let shard = c.shard.clone();
        blocking(move || {
            let op = SetPayloadOp { payload: Payload(payload), points: Some(points), filter: None, key: None };
            shard.update(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(op))).map_err(edge_err("set payload"))?;
            shard.flush().map_err(edge_err("flush"))
        })
        .await?;
        Ok(existing)
    }

    pub(crate) async fn retrieve(&self, name: &str, ids: &[AssetId], with_vectors: bool) -> Result<Vec<StoredPoint>> {
        let Some(c) = self.collection(name).await? else {
            return Ok(Vec::new());
        };
        let req = RetrieveRequestBuilder::new(ids.iter().map(|id| point_id(*id)).collect())
            .with_payload(WithPayloadInterface::Bool(true))
            .with_vector(WithVector::Bool(with_vectors))
            .build();
        let shard = c.shard.clone();
        let records = blocking(move || shard.retrieve(req).map_err(edge_err("retrieve points"))).await?;
        records
            .into_iter()
            .map(|r| {
                let vector = match r.vector {
                    Some(VectorStructInternal::Single(v)) => Some(v),
                    Some(VectorStructInternal::Named(mut m)) => match m.remove("") {
                        Some(VectorInternal::Dense(v)) => Some(v),
                        _ => None,
                    },
                    _ => None,
                };
                Ok(StoredPoint { asset_id: asset_id_of(r.id)?, vector, payload: payload_json(r.payload) })
            })
            .collect()
    }

    pub(crate) async fn count(&self, name: &str, filter: &PointFilter) -> Result<u64> {
        let Some(c) = self.collection(name).await? else {
            return Ok(0);
        };
        let mut req = CountRequestBuilder::new().exact(true);
        if let Some(f) = edge_filter(filter)? {
            req = req.filter(f);
        }
        let req = req.build();
        let shard = c.shard.clone();
        blocking(move || shard.count(req).map(|n| n as u64).map_err(edge_err("count points"))).await
    }

    pub(crate) async fn delete_ids(&self, name: &str, ids: &[AssetId]) -> Result<u64> {
        let Some(c) = self.collection(name).await? else {
            return Ok(0);
        };
        let _w = c.write_lock.lock().await;
        let present = self.retrieve(name, ids, false).await?.len() as u64;
        let shard = c.shard.clone();
        let ids: Vec<PointId> = ids.iter().map(|id| point_id(*id)).collect();
        blocking(move || {
            shard.update(UpdateOperation::PointOperation(PointOperations::DeletePoints { ids })).map_err(edge_err("delete points"))?;
            shard.flush().map_err(edge_err("flush"))
        })
        .await?;
        Ok(present)
    }

    /// Every point id, page by page until the end (not only the first page).
    pub(crate) async fn scroll_ids(&self, name: &str, page: usize) -> Result<Vec<AssetId>> {
        let Some(c) = self.collection(name).await? else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollRequestBuilder::new().limit(page).with_payload(WithPayloadInterface::Bool(false)).with_vector(WithVector::Bool(false));
            if let Some(o) = offset {
                req = req.offset(o);
            }
            let req = req.build();
            let shard = c.shard.clone();
            let (records, next) = blocking(move || shard.scroll(req).map_err(edge_err("scroll points"))).await?;
            for r in records {
                ids.push(asset_id_of(r.id)?);
            }
            match next {
                Some(n) => offset = Some(n),
                None => return Ok(ids),
            }
        }
    }

    pub(crate) async fn spec(&self, name: &str) -> Result<Option<CollectionSpec>> {
        // resolved once: an alias swapped meanwhile cannot pair one collection's name with another's model
        let resolved = self.resolve(name)?;
        Ok(self.collection(&resolved).await?.map(|c| CollectionSpec { name: resolved, dim: c.spec.dim, model_version: c.spec.model_version.clone() }))
    }

    pub(crate) async fn info(&self, name: &str) -> Result<Option<CollectionInfo>> {
        let resolved = self.resolve(name)?;
        let Some(c) = self.collection(&resolved).await? else {
            return Ok(None);
        };
        let points = self.count(&resolved, &PointFilter::default()).await?;
        let shard = c.shard.clone();
        let shard_info = blocking(move || shard.info().map_err(edge_err("read shard info"))).await?;
        let mut payload_indexes: Vec<String> = shard_info.payload_schema.keys().map(|k| k.to_string()).collect();
        payload_indexes.sort();
        Ok(Some(CollectionInfo {
            name: resolved,
            dim: c.spec.dim,
            distance: c.spec.distance.clone(),
            model_version: Some(c.spec.model_version.clone()),
            points,
            indexed_vectors: shard_info.indexed_vectors_count as u64,
            payload_indexes,
        }))
    }

    pub(crate) async fn set_alias(&self, alias: &str, collection: &str) -> Result<()> {
        valid_name(alias)?;
        let _admin = self.admin.lock().await;
        if !self.spec_file(collection).exists() {
            return Err(VectorError::NoCollection(collection.to_owned()));
        }
        if self.spec_file(alias).exists() {
            return Err(VectorError::InvalidRequest(format!("{alias:?} is a collection; an alias cannot take its name")));
        }
        let mut aliases = self.read_aliases()?;
        aliases.insert(alias.to_owned(), collection.to_owned());
        self.write_aliases(&aliases)
    }

    pub(crate) async fn aliases(&self) -> Result<HashMap<String, String>> {
        self.read_aliases()
    }

    pub(crate) async fn list_collections(&self) -> Result<Vec<String>> {
        let dir = self.root.join("collections");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|source| VectorError::Io { path: dir.clone(), source })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Drops a collection that no alias points at.
    pub(crate) async fn drop_collection(&self, name: &str) -> Result<bool> {
        let _admin = self.admin.lock().await;
        if let Some((alias, _)) = self.read_aliases()?.into_iter().find(|(_, target)| target == name) {
            return Err(VectorError::InvalidRequest(format!("alias {alias:?} points at {name:?}; point it elsewhere first")));
        }
        if !self.spec_file(name).exists() {
            return Ok(false);
        }
        self.open.lock().expect("collections lock").remove(name);
        let spec = self.spec_file(name);
        std::fs::remove_file(&spec).map_err(|source| VectorError::Io { path: spec, source })?;
        let dir = self.shard_dir(name);
        std::fs::remove_dir_all(&dir).map_err(|source| VectorError::Io { path: dir, source })?;
        Ok(true)
    }
}

/// Creates the payload indexes of `PAYLOAD_INDEXES` the shard lacks, and sets the optimizer
/// settings of `optimizers()` on a shard made before them; flushes.
fn ensure_payload_indexes(shard: &EdgeShard) -> Result<()> {
    if shard.config().optimizers() != optimizers() {
        shard.set_optimizers_config(optimizers()).map_err(edge_err("set the optimizer config"))?;
    }
    let have = shard.info().map_err(edge_err("read shard info"))?.payload_schema;
    let mut created = false;
    for (field, kind) in PAYLOAD_INDEXES {
        let field_name = JsonPath::try_from(field).expect("static field name");
        if have.contains_key(&field_name) {
            continue;
        }
        // on disk, as the vectors (see `ensure_collection`); an integer is only ever matched
        let params = match kind {
            IndexKind::Datetime => PayloadSchemaParams::Datetime(DatetimeIndexParamsBuilder::new().memory(Memory::Cold).build()),
            IndexKind::Integer => PayloadSchemaParams::Integer(IntegerIndexParamsBuilder::new().lookup(true).range(false).memory(Memory::Cold).build()),
            IndexKind::Keyword => PayloadSchemaParams::Keyword(KeywordIndexParamsBuilder::new().memory(Memory::Cold).build()),
            IndexKind::Bool => PayloadSchemaParams::Bool(BoolIndexParamsBuilder::new().memory(Memory::Cold).build()),
        };
        shard
            .update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name,
                field_schema: Some(PayloadFieldSchema::FieldParams(params)),
            })))
            .map_err(edge_err("create a payload index"))?;
        created = true;
    }
    if created {
        shard.flush().map_err(edge_err("flush"))?;
    }
    Ok(())
}

fn edge_filter(filter: &PointFilter) -> Result<Option<Filter>> {
    if filter.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(filter.to_qdrant_json()).map(Some).map_err(|e| VectorError::InvalidRequest(format!("filter: {e}")))
}

/// An asset's point id: the asset id (catalog ids are positive).
fn point_id(id: AssetId) -> PointId {
    PointId::NumId(id as u64)
}

fn asset_id_of(id: PointId) -> Result<AssetId> {
    match id {
        PointId::NumId(n) if n <= i64::MAX as u64 => Ok(n as AssetId),
        other => Err(VectorError::Backend {
            action: "read a point id",
            reason: format!("{other:?} in a collection of asset ids (a collection from before 0.2 holds UUIDs: index again)"),
        }),
    }
}

fn payload_json(payload: Option<Payload>) -> serde_json::Value {
    serde_json::Value::Object(payload.map(|p| p.0).unwrap_or_default())
}

fn hit(id: PointId, score: f32, payload: Option<Payload>) -> Result<Hit> {
    let p = payload_json(payload);
    Ok(Hit {
        asset_id: asset_id_of(id)?,
        score,
        path: p["path"].as_str().map(str::to_owned),
        created_at: p["created_at"].as_str().map(str::to_owned),
        category_id: p["category_id"].as_i64(),
        model_version: p["model_version"].as_str().map(str::to_owned),
    })
}
