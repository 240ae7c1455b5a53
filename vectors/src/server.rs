//! The server backend: a Qdrant server over gRPC (`qdrant-client`).
//!
//! The model version lives in the collection's metadata, so `info` tells which model a collection
//! (or the alias pointing at it) was built with. Writes use `wait: true`: Qdrant answers once the
//! operation is applied and in its WAL, which is what the writer acks on. Aliases are changed with
//! one `UpdateAliases` request holding every action, which Qdrant applies atomically.

use std::collections::HashMap;

use protocol::AssetId;
use qdrant_client::{
    Payload, Qdrant, QdrantError,
    qdrant::{
        AliasOperations, ChangeAliases, Condition, CountPointsBuilder, CreateAlias, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DatetimeRange, DeleteAlias,
        DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, ScrollPointsBuilder, UpsertPointsBuilder,
        Value, VectorParamsBuilder, alias_operations::Action, collections_client::CollectionsClient, point_id::PointIdOptions, vector_output, vectors_config,
        vectors_output::VectorsOptions,
    },
};
use tonic::{Code, transport::Channel};

use crate::{error::VectorError, model::*};

type Result<T> = std::result::Result<T, VectorError>;

pub(crate) struct ServerStore {
    client: Qdrant,
    /// The raw collections API, for alias changes with several actions in one request.
    collections: CollectionsClient<Channel>,
    url: String,
}

/// Maps a client error: a server that cannot be reached is `Unavailable` (the API's 503).
fn server_err<'a>(action: &'static str, url: &'a str) -> impl Fn(QdrantError) -> VectorError + 'a {
    move |e| match &e {
        QdrantError::ResponseError { status } => status_err(action, url, status),
        QdrantError::ResourceExhaustedError { .. } => VectorError::Unavailable(format!("Qdrant at {url} is overloaded: {e}")),
        _ => VectorError::Backend { action, reason: e.to_string() },
    }
}

fn status_err(action: &'static str, url: &str, status: &tonic::Status) -> VectorError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => VectorError::Unavailable(format!("Qdrant at {url}: {}", status.message())),
        // qdrant-client reports a failed connect as Internal "Failed to connect to ..."
        Code::Internal if status.message().starts_with("Failed to connect") => VectorError::Unavailable(format!("cannot connect to Qdrant at {url}")),
        Code::InvalidArgument => VectorError::InvalidRequest(format!("{action}: {}", status.message())),
        _ => VectorError::Backend { action, reason: format!("{:?}: {}", status.code(), status.message()) },
    }
}

fn is_not_found(e: &QdrantError) -> bool {
    matches!(e, QdrantError::ResponseError { status } if status.code() == Code::NotFound)
}

/// An asset's point id: the asset id (catalog ids are positive).
fn point_id(id: AssetId) -> PointId {
    PointId::from(id as u64)
}

fn asset_id_of(id: Option<PointId>) -> Result<AssetId> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Num(n)) if n <= i64::MAX as u64 => Ok(n as AssetId),
        other => Err(VectorError::Backend {
            action: "read a point id",
            reason: format!("{other:?} in a collection of asset ids (a collection from before 0.2 holds UUIDs: index again)"),
        }),
    }
}

fn payload_json(payload: HashMap<String, Value>) -> serde_json::Value {
    serde_json::Value::from(Payload::from(payload))
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// The filter in Qdrant's gRPC form; the same conditions as `PointFilter::to_qdrant_json`.
fn grpc_filter(filter: &PointFilter) -> Option<Filter> {
    if filter.is_empty() {
        return None;
    }
    let mut must = Vec::new();
    if filter.from.is_some() || filter.to.is_some() {
        must.push(Condition::datetime_range("created_at", DatetimeRange { gte: filter.from.map(timestamp), lte: filter.to.map(timestamp), ..Default::default() }));
    }
    if let Some(c) = filter.category_id {
        must.push(Condition::matches("category_id", c));
    }
    if let Some(prefix) = &filter.path_prefix {
        must.push(Condition::matches("path_dirs", dir_key(prefix)));
    }
    Some(Filter::must(must))
}

impl ServerStore {
    /// A client for the server at `url` (gRPC, e.g. `http://127.0.0.1:6334`). Connecting is lazy:
    /// an unreachable server shows as `Unavailable` on the first call, not here.
    pub(crate) fn connect(url: &str) -> Result<Self> {
        let client = Qdrant::from_url(url)
            .skip_compatibility_check()
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| VectorError::InvalidRequest(format!("Qdrant url {url:?}: {e}")))?;
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|e| VectorError::InvalidRequest(format!("Qdrant url {url:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect_lazy();
        Ok(ServerStore { client, collections: CollectionsClient::new(channel), url: url.to_owned() })
    }

    fn err(&self, action: &'static str) -> impl Fn(QdrantError) -> VectorError + '_ {
        server_err(action, &self.url)
    }

    pub(crate) async fn health(&self) -> Result<()> {
        self.client.health_check().await.map(|_| ()).map_err(self.err("check health"))
    }

    pub(crate) async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<bool> {
        if let Some(info) = self.info(&spec.name).await? {
            if info.dim != spec.dim || info.distance != "cosine" {
                return Err(VectorError::Mismatch { name: spec.name.clone(), existing: format!("{}-d {}", info.dim, info.distance), wanted: format!("{}-d cosine", spec.dim) });
            }
            self.ensure_payload_indexes(&spec.name, &info.payload_indexes).await?;
            return Ok(false);
        }
        let metadata = HashMap::from([("model_version".to_owned(), serde_json::Value::from(spec.model_version.clone()))]);
        let created = self
            .client
            .create_collection(CreateCollectionBuilder::new(&spec.name).vectors_config(VectorParamsBuilder::new(spec.dim as u64, Distance::Cosine)).metadata(metadata))
            .await;
        match created {
            Ok(_) => {}
            // another process created it between our check and our create: check it again
            Err(QdrantError::ResponseError { status }) if status.code() == Code::AlreadyExists => return Box::pin(self.ensure_collection(spec)).await,
            Err(e) => return Err(self.err("create a collection")(e)),
        }
        self.ensure_payload_indexes(&spec.name, &[]).await?;
        Ok(true)
    }

    /// Creates the payload indexes of `PAYLOAD_INDEXES` not in `have`.
    async fn ensure_payload_indexes(&self, name: &str, have: &[String]) -> Result<()> {
        for (field, kind) in PAYLOAD_INDEXES {
            if have.iter().any(|h| h == field) {
                continue;
            }
            let kind = match kind {
                IndexKind::Datetime => FieldType::Datetime,
                IndexKind::Integer => FieldType::Integer,
                IndexKind::Keyword => FieldType::Keyword,
                IndexKind::Bool => FieldType::Bool,
            };
            self.client.create_field_index(CreateFieldIndexCollectionBuilder::new(name, field, kind).wait(true)).await.map_err(self.err("create a payload index"))?;
        }
        Ok(())
    }

    pub(crate) async fn upsert(&self, name: &str, points: Vec<AssetPoint>) -> Result<()> {
        let info = self.info(name).await?.ok_or_else(|| VectorError::NoCollection(name.to_owned()))?;
        for p in &points {
            if p.vector.len() != info.dim {
                return Err(VectorError::InvalidRequest(format!("vector of asset {} has {} values, the collection takes {}", p.asset_id, p.vector.len(), info.dim)));
            }
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let payload = Payload::try_from(p.payload()).expect("the payload is a JSON object");
                PointStruct::new(point_id(p.asset_id), p.vector, payload)
            })
            .collect();
        self.client.upsert_points(UpsertPointsBuilder::new(name, points).wait(true)).await.map(|_| ()).map_err(self.err("upsert points"))
    }

    pub(crate) async fn search(&self, name: &str, vector: Vec<f32>, filter: &PointFilter, limit: usize, offset: usize) -> Result<Vec<Hit>> {
        let mut req = QueryPointsBuilder::new(name).query(vector).limit(limit as u64).offset(offset as u64).with_payload(true);
        // never a soft-deleted point
        let mut f = grpc_filter(filter).unwrap_or_default();
        f.must_not.push(Condition::matches(crate::model::DELETED_KEY, true));
        req = req.filter(f);
        let points = match self.client.query(req).await {
            Ok(r) => r.result,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.err("search")(e)),
        };
        points
            .into_iter()
            .map(|p| {
                let payload = payload_json(p.payload);
                Ok(Hit {
                    asset_id: asset_id_of(p.id)?,
                    score: p.score,
                    path: payload["path"].as_str().map(str::to_owned),
                    created_at: payload["created_at"].as_str().map(str::to_owned),
                    category_id: payload["category_id"].as_i64(),
                    model_version: payload["model_version"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }

    pub(crate) async fn retrieve(&self, name: &str, ids: &[AssetId], with_vectors: bool) -> Result<Vec<StoredPoint>> {
        let ids: Vec<PointId> = ids.iter().map(|id| point_id(*id)).collect();
        let points = match self.client.get_points(GetPointsBuilder::new(name, ids).with_payload(true).with_vectors(with_vectors)).await {
            Ok(r) => r.result,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.err("retrieve points")(e)),
        };
        points
            .into_iter()
            .map(|p| {
                let vector = match p.vectors.and_then(|v| v.vectors_options) {
                    Some(VectorsOptions::Vector(v)) => match v.vector {
                        Some(vector_output::Vector::Dense(d)) => Some(d.data),
                        _ => None,
                    },
                    _ => None,
                };
                Ok(StoredPoint { asset_id: asset_id_of(p.id)?, vector, payload: payload_json(p.payload) })
            })
            .collect()
    }

    pub(crate) async fn count(&self, name: &str, filter: &PointFilter) -> Result<u64> {
        let mut req = CountPointsBuilder::new(name).exact(true);
        if let Some(f) = grpc_filter(filter) {
            req = req.filter(f);
        }
        match self.client.count(req).await {
            Ok(r) => Ok(r.result.map(|c| c.count).unwrap_or(0)),
            Err(e) if is_not_found(&e) => Ok(0),
            Err(e) => Err(self.err("count points")(e)),
        }
    }

    /// Deletes these ids; the count is of the ids that existed just before (Qdrant does not return
    /// one), so concurrent deletes of the same ids may both count them.
    pub(crate) async fn delete_ids(&self, name: &str, ids: &[AssetId]) -> Result<u64> {
        let present = self.retrieve(name, ids, false).await?;
        if present.is_empty() {
            return Ok(0);
        }
        let list = PointsIdsList { ids: present.iter().map(|p| point_id(p.asset_id)).collect() };
        self.client.delete_points(DeletePointsBuilder::new(name).points(list).wait(true)).await.map_err(self.err("delete points"))?;
        Ok(present.len() as u64)
    }

    pub(crate) async fn scroll_ids(&self, name: &str, page: usize) -> Result<Vec<AssetId>> {
        let mut ids = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(name).limit(page as u32).with_payload(false).with_vectors(false);
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let page = match self.client.scroll(req).await {
                Ok(r) => r,
                Err(e) if is_not_found(&e) => return Ok(ids),
                Err(e) => return Err(self.err("scroll points")(e)),
            };
            for p in page.result {
                ids.push(asset_id_of(p.id)?);
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(ids),
            }
        }
    }

    pub(crate) async fn spec(&self, name: &str) -> Result<Option<CollectionSpec>> {
        // the server keeps its counts at hand: its collection info is one cheap call
        Ok(self.info(name).await?.map(|i| CollectionSpec { name: i.name, dim: i.dim, model_version: i.model_version.unwrap_or_else(|| "unknown".into()) }))
    }

    pub(crate) async fn info(&self, name: &str) -> Result<Option<CollectionInfo>> {
        let resolved = self.aliases().await?.remove(name).unwrap_or_else(|| name.to_owned());
        let info = match self.client.collection_info(&resolved).await {
            Ok(r) => r.result,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.err("read collection info")(e)),
        };
        let Some(info) = info else { return Ok(None) };
        let config = info.config.unwrap_or_default();
        let params = match config.params.and_then(|p| p.vectors_config).and_then(|v| v.config) {
            Some(vectors_config::Config::Params(p)) => p,
            other => return Err(VectorError::Backend { action: "read collection info", reason: format!("{resolved:?} has named or no vectors: {other:?}") }),
        };
        let distance = Distance::try_from(params.distance).map(|d| d.as_str_name().to_lowercase()).unwrap_or_else(|_| format!("distance {}", params.distance));
        let model_version = config.metadata.get("model_version").and_then(|v| serde_json::Value::from(v.clone()).as_str().map(str::to_owned));
        let mut payload_indexes: Vec<String> = info.payload_schema.keys().cloned().collect();
        payload_indexes.sort();
        Ok(Some(CollectionInfo {
            name: resolved,
            dim: params.size as usize,
            distance,
            model_version,
            points: info.points_count.unwrap_or(0),
            indexed_vectors: info.indexed_vectors_count.unwrap_or(0),
            payload_indexes,
        }))
    }

    /// Sets payload keys on these points (the others keep theirs); returns how many exist.
    pub(crate) async fn set_payload(&self, name: &str, ids: &[AssetId], payload: serde_json::Map<String, serde_json::Value>) -> Result<u64> {
        // setting a payload on a point that does not exist is an error: only the ones there
        let found = self.retrieve(name, ids, false).await?;
        let existing = found.len() as u64;
        if existing == 0 {
            return Ok(0);
        }
        let selector: Vec<qdrant_client::qdrant::PointId> = found.iter().map(|p| point_id(p.asset_id)).collect();
        let payload = Payload::try_from(serde_json::Value::Object(payload)).map_err(|e| VectorError::InvalidRequest(format!("payload: {e}")))?;
        let req = qdrant_client::qdrant::SetPayloadPointsBuilder::new(name, payload).points_selector(selector).wait(true);
        self.client.set_payload(req).await.map_err(self.err("set payload"))?;
        Ok(existing)
    }

    /// Creates or re-points an alias in one request (delete then create, applied atomically).
    pub(crate) async fn set_alias(&self, alias: &str, collection: &str) -> Result<()> {
        let existing = self.aliases().await?;
        let mut actions = Vec::new();
        if existing.contains_key(alias) {
            actions.push(AliasOperations { action: Some(Action::DeleteAlias(DeleteAlias { alias_name: alias.to_owned() })) });
        }
        actions.push(AliasOperations { action: Some(Action::CreateAlias(CreateAlias { collection_name: collection.to_owned(), alias_name: alias.to_owned() })) });
        let mut api = self.collections.clone();
        match api.update_aliases(ChangeAliases { actions, timeout: None }).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Err(VectorError::NoCollection(collection.to_owned())),
            Err(s) => Err(status_err("change an alias", &self.url, &s)),
        }
    }

    pub(crate) async fn aliases(&self) -> Result<HashMap<String, String>> {
        let r = self.client.list_aliases().await.map_err(self.err("list aliases"))?;
        Ok(r.aliases.into_iter().map(|a| (a.alias_name, a.collection_name)).collect())
    }

    pub(crate) async fn list_collections(&self) -> Result<Vec<String>> {
        let r = self.client.list_collections().await.map_err(self.err("list collections"))?;
        let mut names: Vec<String> = r.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    pub(crate) async fn drop_collection(&self, name: &str) -> Result<bool> {
        if let Some((alias, _)) = self.aliases().await?.into_iter().find(|(_, target)| target == name) {
            return Err(VectorError::InvalidRequest(format!("alias {alias:?} points at {name:?}; point it elsewhere first")));
        }
        let r = self.client.delete_collection(name).await.map_err(self.err("delete a collection"))?;
        Ok(r.result)
    }

    /// The server builds its index itself; nothing to do.
    pub(crate) async fn optimize(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}
