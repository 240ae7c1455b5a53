//! The three gRPC services (Qdrant health, Collections, Points) over one `Engine`.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use anyhow::Context;
use qdrant_client::qdrant::{
    self, AliasDescription, CollectionConfig, CollectionDescription, CollectionExists, CollectionExistsResponse, CollectionOperationResponse, CollectionParams, CollectionStatus,
    CountResponse, CountResult, GetCollectionInfoResponse, GetResponse, HealthCheckReply, ListAliasesResponse, ListCollectionsResponse, PayloadSchemaInfo, PointsOperationResponse,
    QueryResponse, RetrievedPoint, ScoredPoint, ScrollResponse, UpdateResult, UpdateStatus, VectorParams, VectorsConfig,
    alias_operations::Action,
    collections_server::{Collections, CollectionsServer},
    points_selector::PointsSelectorOneOf,
    points_server::{Points, PointsServer},
    qdrant_server::{Qdrant, QdrantServer},
    query, vector_input, vectors_config,
};
use qdrant_edge as edge;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::convert::*;

type Reply<T> = Result<Response<T>, Status>;

/// What the fixture keeps about a collection beside its shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    size: u64,
    distance: i32,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// field -> `qdrant::FieldType` as i32
    payload_schema: BTreeMap<String, i32>,
}

struct Collection {
    shard: Arc<edge::EdgeShard>,
    meta: Mutex<Meta>,
}

/// Collections, aliases and their shards under one data directory.
pub struct Engine {
    root: PathBuf,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    aliases: RwLock<BTreeMap<String, String>>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

fn valid_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > 255 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(Status::invalid_argument(format!("Validation error: invalid collection name {name:?}")));
    }
    Ok(())
}

impl Engine {
    /// Opens (or creates) the data directory and every collection in it.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        let mut collections = HashMap::new();
        for entry in std::fs::read_dir(root)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else { continue };
            if name == "aliases" {
                continue;
            }
            let meta: Meta = serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("read {}", path.display()))?;
            let shard = edge::EdgeShard::load(&root.join(name), None).with_context(|| format!("open shard {name}"))?;
            collections.insert(name.to_owned(), Arc::new(Collection { shard: Arc::new(shard), meta: Mutex::new(meta) }));
        }
        let aliases = match std::fs::read(root.join("aliases.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("read aliases.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Engine { root: root.to_owned(), collections: RwLock::new(collections), aliases: RwLock::new(aliases) })
    }

    fn resolve(&self, name: &str) -> String {
        self.aliases.read().expect("aliases lock").get(name).cloned().unwrap_or_else(|| name.to_owned())
    }

    fn get(&self, name: &str) -> Result<Arc<Collection>, Status> {
        let resolved = self.resolve(name);
        self.collections.read().expect("collections lock").get(&resolved).cloned().ok_or_else(|| not_found(name))
    }

    fn save_meta(&self, name: &str, meta: &Meta) -> Result<(), Status> {
        std::fs::write(self.root.join(format!("{name}.json")), serde_json::to_vec_pretty(meta).map_err(internal)?).map_err(internal)
    }

    fn save_aliases(&self, aliases: &BTreeMap<String, String>) -> Result<(), Status> {
        let path = self.root.join("aliases.json");
        let tmp = self.root.join("aliases.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(aliases).map_err(internal)?).map_err(internal)?;
        std::fs::rename(tmp, path).map_err(internal)
    }
}

#[derive(Clone)]
struct Svc(Arc<Engine>);

/// Serves the fixture on `listener` until `signal` completes.
pub(crate) async fn serve(engine: Engine, listener: tokio::net::TcpListener, signal: impl Future<Output = ()> + Send) -> Result<(), tonic::transport::Error> {
    let svc = Svc(Arc::new(engine));
    tonic::transport::Server::builder()
        .add_service(QdrantServer::new(svc.clone()))
        .add_service(CollectionsServer::new(svc.clone()))
        .add_service(PointsServer::new(svc))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), signal)
        .await
}

fn done(operation_id: u64, since: Instant) -> PointsOperationResponse {
    PointsOperationResponse {
        result: Some(UpdateResult { operation_id: Some(operation_id), status: UpdateStatus::Completed as i32 }),
        time: since.elapsed().as_secs_f64(),
        usage: None,
    }
}

fn retrieved(r: edge::Record) -> RetrievedPoint {
    RetrievedPoint { id: Some(point_id_out(r.id)), payload: payload_out(r.payload), vectors: vector_out(r.vector), ..Default::default() }
}

/// Applies one update to a shard and flushes it, so the answer means durable (`wait: true`).
async fn apply(c: &Collection, op: edge::UpdateOperation) -> Result<(), Status> {
    let shard = c.shard.clone();
    blocking(move || {
        shard.update(op).map_err(|e| Status::invalid_argument(e.to_string()))?;
        shard.flush().map_err(internal)
    })
    .await
}

/// Implements a service trait: the served methods as written, every other one `unimplemented`.
macro_rules! service {
    ($trait:ident; unserved { $($name:ident($req:ident) -> $resp:ident;)* } $($served:tt)*) => {
        #[tonic::async_trait]
        impl $trait for Svc {
            $($served)*
            $(
                async fn $name(&self, _request: Request<qdrant::$req>) -> Reply<qdrant::$resp> {
                    Err(unserved(concat!(stringify!($trait), ".", stringify!($name))))
                }
            )*
        }
    };
}

service! { Qdrant; unserved {}
    async fn health_check(&self, _request: Request<qdrant::HealthCheckRequest>) -> Reply<HealthCheckReply> {
        Ok(Response::new(HealthCheckReply { title: "qdrant-fixture (a test fixture, not Qdrant)".into(), version: "1.16.0".into(), commit: None }))
    }
}

service! { Collections;
    unserved {
        update(UpdateCollection) -> CollectionOperationResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }

    async fn get(&self, request: Request<qdrant::GetCollectionInfoRequest>) -> Reply<GetCollectionInfoResponse> {
        let since = Instant::now();
        let c = self.0.get(&request.get_ref().collection_name)?;
        let meta = c.meta.lock().expect("meta lock").clone();
        let shard = c.shard.clone();
        let points = blocking(move || shard.count(edge::CountRequestBuilder::new().exact(true).build()).map_err(internal)).await? as u64;
        let info = qdrant::CollectionInfo {
            status: CollectionStatus::Green as i32,
            segments_count: 1,
            points_count: Some(points),
            config: Some(CollectionConfig {
                params: Some(CollectionParams {
                    shard_number: 1,
                    vectors_config: Some(VectorsConfig {
                        config: Some(vectors_config::Config::Params(VectorParams { size: meta.size, distance: meta.distance, ..Default::default() })),
                    }),
                    ..Default::default()
                }),
                metadata: meta.metadata.into_iter().map(|(k, v)| (k, v.into())).collect(),
                ..Default::default()
            }),
            payload_schema: meta.payload_schema.into_iter().map(|(k, t)| (k, PayloadSchemaInfo { data_type: t, params: None, points: None })).collect(),
            ..Default::default()
        };
        Ok(Response::new(GetCollectionInfoResponse { result: Some(info), time: since.elapsed().as_secs_f64() }))
    }

    async fn list(&self, _request: Request<qdrant::ListCollectionsRequest>) -> Reply<ListCollectionsResponse> {
        let mut names: Vec<String> = self.0.collections.read().expect("collections lock").keys().cloned().collect();
        names.sort();
        Ok(Response::new(ListCollectionsResponse { collections: names.into_iter().map(|name| CollectionDescription { name }).collect(), time: 0.0 }))
    }

    async fn create(&self, request: Request<qdrant::CreateCollection>) -> Reply<CollectionOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        let name = req.collection_name.clone();
        valid_name(&name)?;
        if req.sparse_vectors_config.is_some() || req.quantization_config.is_some() || req.sharding_method.is_some() {
            return Err(unserved("sparse vectors, quantization or custom sharding"));
        }
        let params = match req.vectors_config.and_then(|v| v.config) {
            Some(vectors_config::Config::Params(p)) => p,
            Some(vectors_config::Config::ParamsMap(_)) => return Err(unserved("named vectors")),
            None => return Err(Status::invalid_argument("Validation error: vectors_config is required")),
        };
        let distance = match qdrant::Distance::try_from(params.distance) {
            Ok(qdrant::Distance::Cosine) => edge::Distance::Cosine,
            Ok(qdrant::Distance::Dot) => edge::Distance::Dot,
            Ok(qdrant::Distance::Euclid) => edge::Distance::Euclid,
            Ok(qdrant::Distance::Manhattan) => edge::Distance::Manhattan,
            _ => return Err(Status::invalid_argument(format!("unknown distance {}", params.distance))),
        };
        let mut collections = self.0.collections.write().expect("collections lock");
        if collections.contains_key(&name) {
            return Err(Status::already_exists(format!("Wrong input: Collection `{name}` already exists!")));
        }
        if self.0.aliases.read().expect("aliases lock").contains_key(&name) {
            return Err(Status::already_exists(format!("Wrong input: an alias named `{name}` already exists")));
        }
        let dir = self.0.root.join(&name);
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let config = edge::EdgeConfigBuilder::new().vector("", edge::EdgeVectorParamsBuilder::new(params.size as usize, distance).build()).build();
        let shard = edge::EdgeShard::new(&dir, config).map_err(internal)?;
        let meta = Meta {
            size: params.size,
            distance: params.distance,
            metadata: req.metadata.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
            payload_schema: BTreeMap::new(),
        };
        self.0.save_meta(&name, &meta)?;
        collections.insert(name, Arc::new(Collection { shard: Arc::new(shard), meta: Mutex::new(meta) }));
        Ok(Response::new(CollectionOperationResponse { result: true, time: since.elapsed().as_secs_f64() }))
    }

    async fn delete(&self, request: Request<qdrant::DeleteCollection>) -> Reply<CollectionOperationResponse> {
        let since = Instant::now();
        let name = request.into_inner().collection_name;
        let removed = self.0.collections.write().expect("collections lock").remove(&name);
        let Some(removed) = removed else {
            return Ok(Response::new(CollectionOperationResponse { result: false, time: since.elapsed().as_secs_f64() }));
        };
        drop(removed);
        // as the server does, aliases of a dropped collection go with it
        {
            let mut aliases = self.0.aliases.write().expect("aliases lock");
            aliases.retain(|_, target| *target != name);
            self.0.save_aliases(&aliases)?;
        }
        std::fs::remove_file(self.0.root.join(format!("{name}.json"))).map_err(internal)?;
        std::fs::remove_dir_all(self.0.root.join(&name)).map_err(internal)?;
        Ok(Response::new(CollectionOperationResponse { result: true, time: since.elapsed().as_secs_f64() }))
    }

    /// All actions are checked against a copy and applied together, or none is.
    async fn update_aliases(&self, request: Request<qdrant::ChangeAliases>) -> Reply<CollectionOperationResponse> {
        let since = Instant::now();
        let collections = self.0.collections.read().expect("collections lock");
        let mut aliases = self.0.aliases.write().expect("aliases lock");
        let mut next = aliases.clone();
        for op in request.into_inner().actions {
            match op.action {
                Some(Action::CreateAlias(a)) => {
                    valid_name(&a.alias_name)?;
                    if !collections.contains_key(&a.collection_name) {
                        return Err(not_found(&a.collection_name));
                    }
                    if collections.contains_key(&a.alias_name) {
                        return Err(Status::invalid_argument(format!("Wrong input: Collection `{}` already exists!", a.alias_name)));
                    }
                    next.insert(a.alias_name, a.collection_name);
                }
                Some(Action::DeleteAlias(a)) => {
                    if next.remove(&a.alias_name).is_none() {
                        return Err(Status::not_found(format!("Not found: Alias {} does not exists!", a.alias_name)));
                    }
                }
                Some(Action::RenameAlias(a)) => {
                    let target = next.remove(&a.old_alias_name).ok_or_else(|| Status::not_found(format!("Not found: Alias {} does not exists!", a.old_alias_name)))?;
                    next.insert(a.new_alias_name, target);
                }
                None => return Err(Status::invalid_argument("empty alias action")),
            }
        }
        self.0.save_aliases(&next)?;
        *aliases = next;
        Ok(Response::new(CollectionOperationResponse { result: true, time: since.elapsed().as_secs_f64() }))
    }

    async fn list_collection_aliases(&self, request: Request<qdrant::ListCollectionAliasesRequest>) -> Reply<ListAliasesResponse> {
        let name = request.into_inner().collection_name;
        let aliases = self.0.aliases.read().expect("aliases lock");
        let list = aliases.iter().filter(|(_, t)| **t == name).map(|(a, t)| AliasDescription { alias_name: a.clone(), collection_name: t.clone() }).collect();
        Ok(Response::new(ListAliasesResponse { aliases: list, time: 0.0 }))
    }

    async fn list_aliases(&self, _request: Request<qdrant::ListAliasesRequest>) -> Reply<ListAliasesResponse> {
        let aliases = self.0.aliases.read().expect("aliases lock");
        let list = aliases.iter().map(|(a, t)| AliasDescription { alias_name: a.clone(), collection_name: t.clone() }).collect();
        Ok(Response::new(ListAliasesResponse { aliases: list, time: 0.0 }))
    }

    async fn collection_exists(&self, request: Request<qdrant::CollectionExistsRequest>) -> Reply<CollectionExistsResponse> {
        let exists = self.0.collections.read().expect("collections lock").contains_key(&request.get_ref().collection_name);
        Ok(Response::new(CollectionExistsResponse { result: Some(CollectionExists { exists }), time: 0.0 }))
    }
}

service! { Points;
    unserved {
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }

    async fn upsert(&self, request: Request<qdrant::UpsertPoints>) -> Reply<PointsOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        if req.update_filter.is_some() || req.shard_key_selector.is_some() {
            return Err(unserved("conditional upserts or shard keys"));
        }
        let c = self.0.get(&req.collection_name)?;
        let size = c.meta.lock().expect("meta lock").size as usize;
        let mut list = Vec::with_capacity(req.points.len());
        for p in req.points {
            let vector = vector_in(p.vectors)?;
            if vector.len() != size {
                return Err(Status::invalid_argument(format!("Wrong input: Vector dimension error: expected dim: {size}, got {}", vector.len())));
            }
            list.push(edge::PointStructPersisted { id: point_id_in(p.id)?, vector: edge::VectorStructInternal::Single(vector).into(), payload: Some(payload_in(p.payload)) });
        }
        let n = list.len() as u64;
        apply(&c, edge::UpdateOperation::PointOperation(edge::PointOperations::UpsertPoints(edge::PointInsertOperations::PointsList(list)))).await?;
        Ok(Response::new(done(n, since)))
    }

    async fn delete(&self, request: Request<qdrant::DeletePoints>) -> Reply<PointsOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        let c = self.0.get(&req.collection_name)?;
        let op = match req.points.and_then(|p| p.points_selector_one_of) {
            Some(PointsSelectorOneOf::Points(list)) => {
                let ids = list.ids.into_iter().map(|id| point_id_in(Some(id))).collect::<Result<Vec<_>, _>>()?;
                edge::PointOperations::DeletePoints { ids }
            }
            Some(PointsSelectorOneOf::Filter(f)) => edge::PointOperations::DeletePointsByFilter(filter_in(Some(f))?.expect("a filter was given")),
            None => return Err(Status::invalid_argument("delete needs points or a filter")),
        };
        apply(&c, edge::UpdateOperation::PointOperation(op)).await?;
        Ok(Response::new(done(0, since)))
    }

    /// Sets payload keys on the points given by id (soft delete and restore use it).
    async fn set_payload(&self, request: Request<qdrant::SetPayloadPoints>) -> Reply<PointsOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        if req.key.is_some() || req.shard_key_selector.is_some() {
            return Err(unserved("set payload by key or shard key"));
        }
        let c = self.0.get(&req.collection_name)?;
        let points = match req.points_selector.and_then(|p| p.points_selector_one_of) {
            Some(PointsSelectorOneOf::Points(list)) => list.ids.into_iter().map(|id| point_id_in(Some(id))).collect::<Result<Vec<_>, _>>()?,
            _ => return Err(unserved("set payload by filter")),
        };
        let op = edge::SetPayloadOp { payload: payload_in(req.payload), points: Some(points), filter: None, key: None };
        apply(&c, edge::UpdateOperation::PayloadOperation(edge::PayloadOps::SetPayload(op))).await?;
        Ok(Response::new(done(0, since)))
    }

    async fn get(&self, request: Request<qdrant::GetPoints>) -> Reply<GetResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        let c = self.0.get(&req.collection_name)?;
        let ids = req.ids.into_iter().map(|id| point_id_in(Some(id))).collect::<Result<Vec<_>, _>>()?;
        let r = edge::RetrieveRequestBuilder::new(ids).with_payload(with_payload(req.with_payload, false)?).with_vector(with_vectors(req.with_vectors)?).build();
        let shard = c.shard.clone();
        let records = blocking(move || shard.retrieve(r).map_err(internal)).await?;
        let result = records.into_iter().map(retrieved).collect();
        Ok(Response::new(GetResponse { result, time: since.elapsed().as_secs_f64(), usage: None }))
    }

    async fn create_field_index(&self, request: Request<qdrant::CreateFieldIndexCollection>) -> Reply<PointsOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        if req.field_index_params.is_some() {
            return Err(unserved("field index params"));
        }
        let c = self.0.get(&req.collection_name)?;
        let kind = req.field_type.ok_or_else(|| Status::invalid_argument("field_type is required"))?;
        let field_type = qdrant::FieldType::try_from(kind).map_err(|_| Status::invalid_argument(format!("unknown field type {kind}")))?;
        let schema: edge::PayloadSchemaType =
            serde_json::from_value(serde_json::json!(field_type.as_str_name().trim_start_matches("FieldType").to_lowercase())).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let field = edge::JsonPath::try_from(req.field_name.as_str()).map_err(|_| Status::invalid_argument(format!("bad field name {:?}", req.field_name)))?;
        apply(&c, edge::UpdateOperation::FieldIndexOperation(edge::FieldIndexOperations::CreateIndex(edge::CreateIndex { field_name: field, field_schema: Some(edge::PayloadFieldSchema::FieldType(schema)) })))
            .await?;
        let meta = {
            let mut meta = c.meta.lock().expect("meta lock");
            meta.payload_schema.insert(req.field_name, kind);
            meta.clone()
        };
        self.0.save_meta(&self.0.resolve(&req.collection_name), &meta)?;
        Ok(Response::new(done(0, since)))
    }

    async fn delete_field_index(&self, request: Request<qdrant::DeleteFieldIndexCollection>) -> Reply<PointsOperationResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        let c = self.0.get(&req.collection_name)?;
        let field = edge::JsonPath::try_from(req.field_name.as_str()).map_err(|_| Status::invalid_argument(format!("bad field name {:?}", req.field_name)))?;
        apply(&c, edge::UpdateOperation::FieldIndexOperation(edge::FieldIndexOperations::DeleteIndex(field))).await?;
        let meta = {
            let mut meta = c.meta.lock().expect("meta lock");
            meta.payload_schema.remove(&req.field_name);
            meta.clone()
        };
        self.0.save_meta(&self.0.resolve(&req.collection_name), &meta)?;
        Ok(Response::new(done(0, since)))
    }

    async fn scroll(&self, request: Request<qdrant::ScrollPoints>) -> Reply<ScrollResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        if req.order_by.is_some() {
            return Err(unserved("scroll order_by"));
        }
        let c = self.0.get(&req.collection_name)?;
        let mut r = edge::ScrollRequestBuilder::new()
            .limit(req.limit.unwrap_or(10) as usize)
            .with_payload(with_payload(req.with_payload, true)?)
            .with_vector(with_vectors(req.with_vectors)?);
        if let Some(offset) = req.offset {
            r = r.offset(point_id_in(Some(offset))?);
        }
        if let Some(f) = filter_in(req.filter)? {
            r = r.filter(f);
        }
        let r = r.build();
        let shard = c.shard.clone();
        let (records, next) = blocking(move || shard.scroll(r).map_err(internal)).await?;
        let result = records.into_iter().map(retrieved).collect();
        Ok(Response::new(ScrollResponse { next_page_offset: next.map(point_id_out), result, time: since.elapsed().as_secs_f64(), usage: None }))
    }

    async fn count(&self, request: Request<qdrant::CountPoints>) -> Reply<CountResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        let c = self.0.get(&req.collection_name)?;
        let mut r = edge::CountRequestBuilder::new().exact(req.exact.unwrap_or(true));
        if let Some(f) = filter_in(req.filter)? {
            r = r.filter(f);
        }
        let r = r.build();
        let shard = c.shard.clone();
        let count = blocking(move || shard.count(r).map_err(internal)).await? as u64;
        Ok(Response::new(CountResponse { result: Some(CountResult { count }), time: since.elapsed().as_secs_f64(), usage: None }))
    }

    /// Nearest neighbours of a dense vector, or of a stored point's vector (the point excluded).
    async fn query(&self, request: Request<qdrant::QueryPoints>) -> Reply<QueryResponse> {
        let since = Instant::now();
        let req = request.into_inner();
        if !req.prefetch.is_empty() || req.using.is_some() || req.lookup_from.is_some() || req.score_threshold.is_some() {
            return Err(unserved("prefetch, using, lookup_from or score_threshold"));
        }
        let c = self.0.get(&req.collection_name)?;
        let input = match req.query.and_then(|q| q.variant) {
            Some(query::Variant::Nearest(input)) => input,
            Some(other) => return Err(unserved(format!("query {other:?}"))),
            None => return Err(unserved("queries without a vector (scroll instead)")),
        };
        let mut filter = filter_in(req.filter)?;
        let vector = match input.variant {
            Some(vector_input::Variant::Dense(d)) => d.data,
            Some(vector_input::Variant::Id(id)) => {
                let id = point_id_in(Some(id))?;
                let shard = c.shard.clone();
                let r = edge::RetrieveRequestBuilder::new(vec![id]).with_payload(edge::WithPayloadInterface::Bool(false)).with_vector(edge::WithVector::Bool(true)).build();
                let found = blocking(move || shard.retrieve(r).map_err(internal)).await?;
                let Some(v) = found.into_iter().next().and_then(|r| match r.vector {
                    Some(edge::VectorStructInternal::Single(v)) => Some(v),
                    _ => None,
                }) else {
                    return Err(Status::not_found(format!("Not found: No point with id {id} found")));
                };
                // as the server does, the example point itself is not among the results
                let exclude: edge::Filter = serde_json::from_value(serde_json::json!({"must_not": [{"has_id": [id]}]})).map_err(internal)?;
                filter = Some(match filter {
                    Some(f) => edge::Filter { must: Some(vec![edge::Condition::Filter(f), edge::Condition::Filter(exclude)]), ..Default::default() },
                    None => exclude,
                });
                v
            }
            Some(_) => return Err(unserved("sparse, multi-dense or inference query vectors")),
            None => return Err(Status::invalid_argument("query vector is missing")),
        };
        let size = c.meta.lock().expect("meta lock").size as usize;
        if vector.len() != size {
            return Err(Status::invalid_argument(format!("Wrong input: Vector dimension error: expected dim: {size}, got {}", vector.len())));
        }
        let mut r = edge::QueryRequestBuilder::new(req.limit.unwrap_or(10) as usize)
            .offset(req.offset.unwrap_or(0) as usize)
            .query(edge::ScoringQuery::Vector(edge::QueryEnum::Nearest(edge::NamedQuery { query: edge::VectorInternal::Dense(vector), using: None })))
            .with_payload(with_payload(req.with_payload, false)?)
            .with_vector(with_vectors(req.with_vectors)?);
        if let Some(f) = filter {
            r = r.filter(f);
        }
        let r = r.build();
        let shard = c.shard.clone();
        let points = blocking(move || shard.query(r).map_err(internal)).await?;
        let result = points
            .into_iter()
            .map(|p| ScoredPoint { id: Some(point_id_out(p.id)), score: p.score, version: p.version, payload: payload_out(p.payload), vectors: vector_out(p.vector), ..Default::default() })
            .collect();
        Ok(Response::new(QueryResponse { result, time: since.elapsed().as_secs_f64(), usage: None }))
    }
}
