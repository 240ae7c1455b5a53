//! gRPC messages to and from the edge engine's types. Filters go through Qdrant's JSON filter form,
//! which the engine deserializes; a condition this fixture does not translate is `unimplemented`.

use std::collections::HashMap;

use qdrant_client::{
    Payload,
    qdrant::{
        self, Condition, DenseVector, Filter, PointId, Value, VectorOutput, VectorsOutput, condition::ConditionOneOf, r#match::MatchValue, point_id::PointIdOptions, vector_output,
        vectors::VectorsOptions, vectors_output, with_payload_selector, with_vectors_selector,
    },
};
use qdrant_edge as edge;
use serde_json::{Value as Json, json};
use tonic::Status;

pub(crate) fn unserved(what: impl std::fmt::Display) -> Status {
    Status::unimplemented(format!("qdrant-fixture does not serve {what}"))
}

pub(crate) fn point_id_in(id: Option<PointId>) -> Result<edge::PointId, Status> {
    match id.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(edge::PointId::NumId(n)),
        Some(PointIdOptions::Uuid(s)) => s.parse().map(edge::PointId::Uuid).map_err(|_| Status::invalid_argument(format!("Unable to parse UUID: {s}"))),
        None => Err(Status::invalid_argument("point id is missing")),
    }
}

pub(crate) fn point_id_out(id: edge::PointId) -> PointId {
    match id {
        edge::PointId::NumId(n) => PointId::from(n),
        edge::PointId::Uuid(u) => PointId::from(u.to_string()),
    }
}

fn point_id_json(id: &PointId) -> Result<Json, Status> {
    match &id.point_id_options {
        Some(PointIdOptions::Num(n)) => Ok(json!(n)),
        Some(PointIdOptions::Uuid(s)) => Ok(json!(s)),
        None => Err(Status::invalid_argument("point id is missing")),
    }
}

pub(crate) fn payload_in(payload: HashMap<String, Value>) -> edge::Payload {
    match Json::from(Payload::from(payload)) {
        Json::Object(map) => edge::Payload(map),
        _ => unreachable!("a payload converts to a JSON object"),
    }
}

pub(crate) fn payload_out(payload: Option<edge::Payload>) -> HashMap<String, Value> {
    payload.map(|p| Payload::from(p.0).into()).unwrap_or_default()
}

pub(crate) fn json_value(v: &Value) -> Json {
    Json::from(v.clone())
}

/// A dense, unnamed vector from an upsert.
pub(crate) fn vector_in(vectors: Option<qdrant::Vectors>) -> Result<Vec<f32>, Status> {
    match vectors.and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vector(v)) => match v.vector {
            Some(qdrant::vector::Vector::Dense(d)) => Ok(d.data),
            Some(_) => Err(unserved("sparse, multi-dense or inference vectors")),
            #[allow(deprecated)]
            None => Ok(v.data),
        },
        Some(VectorsOptions::Vectors(_)) => Err(unserved("named vectors")),
        None => Err(Status::invalid_argument("point has no vector")),
    }
}

pub(crate) fn vector_out(v: Option<edge::VectorStructInternal>) -> Option<VectorsOutput> {
    let dense = match v? {
        edge::VectorStructInternal::Single(v) => v,
        edge::VectorStructInternal::Named(mut m) => match m.remove("") {
            Some(edge::VectorInternal::Dense(v)) => v,
            _ => return None,
        },
        _ => return None,
    };
    Some(VectorsOutput {
        vectors_options: Some(vectors_output::VectorsOptions::Vector(VectorOutput {
            vector: Some(vector_output::Vector::Dense(DenseVector { data: dense })),
            ..Default::default()
        })),
    })
}

pub(crate) fn with_payload(sel: Option<qdrant::WithPayloadSelector>, default: bool) -> Result<edge::WithPayloadInterface, Status> {
    match sel.and_then(|s| s.selector_options) {
        None => Ok(edge::WithPayloadInterface::Bool(default)),
        Some(with_payload_selector::SelectorOptions::Enable(b)) => Ok(edge::WithPayloadInterface::Bool(b)),
        Some(_) => Err(unserved("payload include/exclude selectors")),
    }
}

pub(crate) fn with_vectors(sel: Option<qdrant::WithVectorsSelector>) -> Result<edge::WithVector, Status> {
    match sel.and_then(|s| s.selector_options) {
        None => Ok(edge::WithVector::Bool(false)),
        Some(with_vectors_selector::SelectorOptions::Enable(b)) => Ok(edge::WithVector::Bool(b)),
        Some(_) => Err(unserved("named vector selectors")),
    }
}

pub(crate) fn filter_in(filter: Option<Filter>) -> Result<Option<edge::Filter>, Status> {
    let Some(f) = filter else { return Ok(None) };
    let json = filter_json(&f)?;
    serde_json::from_value(json).map(Some).map_err(|e| Status::invalid_argument(format!("filter: {e}")))
}

fn filter_json(f: &Filter) -> Result<Json, Status> {
    if f.min_should.is_some() {
        return Err(unserved("min_should"));
    }
    let list = |conds: &[Condition]| conds.iter().map(condition_json).collect::<Result<Vec<_>, _>>();
    let mut out = serde_json::Map::new();
    for (key, conds) in [("must", &f.must), ("should", &f.should), ("must_not", &f.must_not)] {
        if !conds.is_empty() {
            out.insert(key.into(), Json::Array(list(conds)?));
        }
    }
    Ok(Json::Object(out))
}

fn condition_json(c: &Condition) -> Result<Json, Status> {
    match &c.condition_one_of {
        Some(ConditionOneOf::Filter(f)) => filter_json(f),
        Some(ConditionOneOf::HasId(h)) => Ok(json!({"has_id": h.has_id.iter().map(point_id_json).collect::<Result<Vec<_>, _>>()?})),
        Some(ConditionOneOf::IsEmpty(e)) => Ok(json!({"is_empty": {"key": e.key}})),
        Some(ConditionOneOf::IsNull(n)) => Ok(json!({"is_null": {"key": n.key}})),
        Some(ConditionOneOf::Field(fc)) => field_json(fc),
        Some(other) => Err(unserved(format!("condition {other:?}"))),
        None => Err(Status::invalid_argument("empty condition")),
    }
}

fn field_json(fc: &qdrant::FieldCondition) -> Result<Json, Status> {
    let mut out = serde_json::Map::new();
    out.insert("key".into(), json!(fc.key));
    let mut kinds = 0;
    if let Some(m) = &fc.r#match {
        kinds += 1;
        let m = match &m.match_value {
            Some(MatchValue::Keyword(s)) => json!({"value": s}),
            Some(MatchValue::Integer(i)) => json!({"value": i}),
            Some(MatchValue::Boolean(b)) => json!({"value": b}),
            Some(MatchValue::Keywords(k)) => json!({"any": k.strings}),
            Some(MatchValue::Integers(k)) => json!({"any": k.integers}),
            Some(MatchValue::ExceptKeywords(k)) => json!({"except": k.strings}),
            Some(MatchValue::ExceptIntegers(k)) => json!({"except": k.integers}),
            Some(other) => return Err(unserved(format!("match {other:?}"))),
            None => return Err(Status::invalid_argument("empty match")),
        };
        out.insert("match".into(), m);
    }
    if let Some(r) = &fc.range {
        kinds += 1;
        let mut range = serde_json::Map::new();
        for (k, v) in [("lt", r.lt), ("gt", r.gt), ("gte", r.gte), ("lte", r.lte)] {
            if let Some(v) = v {
                range.insert(k.into(), json!(v));
            }
        }
        out.insert("range".into(), Json::Object(range));
    }
    if let Some(r) = &fc.datetime_range {
        kinds += 1;
        let mut range = serde_json::Map::new();
        for (k, v) in [("lt", &r.lt), ("gt", &r.gt), ("gte", &r.gte), ("lte", &r.lte)] {
            if let Some(t) = v {
                range.insert(k.into(), json!(rfc3339(t)?));
            }
        }
        out.insert("range".into(), Json::Object(range));
    }
    if fc.geo_bounding_box.is_some() || fc.geo_radius.is_some() || fc.geo_polygon.is_some() || fc.values_count.is_some() || fc.is_empty.is_some() || fc.is_null.is_some() {
        return Err(unserved("geo, values_count, is_empty and is_null field conditions"));
    }
    if kinds != 1 {
        return Err(Status::invalid_argument(format!("field condition on {:?} needs exactly one of match, range, datetime_range", fc.key)));
    }
    Ok(Json::Object(out))
}

/// A protobuf timestamp as RFC 3339 UTC, the form the engine parses.
fn rfc3339(t: &prost_types::Timestamp) -> Result<String, Status> {
    let nanos = u32::try_from(t.nanos).map_err(|_| Status::invalid_argument("negative timestamp nanos"))?;
    chrono::DateTime::from_timestamp(t.seconds, nanos)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .ok_or_else(|| Status::invalid_argument(format!("timestamp {}s out of range", t.seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339() {
        let ts = |seconds, nanos| rfc3339(&prost_types::Timestamp { seconds, nanos }).unwrap();
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(ts(1_704_067_199, 500), "2023-12-31T23:59:59.000000500Z");
        assert_eq!(ts(1_709_164_800, 0), "2024-02-29T00:00:00.000000000Z");
        assert_eq!(ts(-1, 0), "1969-12-31T23:59:59.000000000Z");
    }
}
