//! The one place where errors become HTTP answers: `{"error": code, "message": text, "detail": text}`
//! everywhere (`message` is what the web UI of the service this replaces shows; `detail` is where
//! that service's clients read it). Invalid input is 400/404/409/422, a store that cannot be
//! reached is 503, never a bare 500 for something the caller can fix.
//!
//! Requests are read strictly, and in either spelling: query names and JSON keys may be snake_case
//! or camelCase (the service took both), and a name this API does not know is a 422 that names it,
//! never silently ignored.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use catalog::CatalogError;
use serde::Serialize;
use vectors::VectorError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `not_found`, `conflict`, `unprocessable`, `unavailable`, `internal`.
    pub error: &'static str,
    pub message: String,
    /// The same text as `message`.
    pub detail: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::CONFLICT, code: "conflict", message: message.into() }
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "unprocessable", message: message.into() }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "request failed");
        }
        (self.status, Json(ErrorBody { error: self.code, detail: self.message.clone(), message: self.message })).into_response()
    }
}

/// The stable code of an error status, for answers no handler wrote (a layer, an extractor).
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::MISDIRECTED_REQUEST => "misdirected_request",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_fields_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    }
}

/// The longest request target (path and query) served; hyper's own limit is 64 KiB, and its bare
/// answer beyond it is not the error body.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry, below hyper's own limit.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The outermost layer but CORS: every error answer is the error body, whichever layer or
/// extractor made it (axum's 405 for a method a route lacks, a body limit's 413, a multipart
/// extractor's text), with the headers it had (`Allow`, `Retry-After`); and a request target or
/// header block over the limits above is 414 / 431 in that shape before any routing.
pub(crate) async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_BYTES {
        return ApiError { status: StatusCode::URI_TOO_LONG, code: "uri_too_long", message: format!("the request target is longer than {MAX_URI_BYTES} bytes") }.into_response();
    }
    if req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>() > MAX_HEADER_BYTES {
        return ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "header_fields_too_large",
            message: format!("the headers are larger than {MAX_HEADER_BYTES} bytes"),
        }
        .into_response();
    }
    let response = next.run(req).await;
    let status = response.status();
    let json = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // what the layer said, as the message (its texts are short; a long one is cut)
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut out = ApiError { status, code: code_of(status), message }.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// Adds the error answers every operation can give to the OpenAPI document, each with the error
/// body: the input checks (400, 422), the guard (401, 403, 421), a store that cannot be reached
/// (503), a path id that names nothing (404), and for operations with a body 413 and 415. The
/// handlers declare their own answers; these are the ones the shared layers and extractors give.
pub(crate) struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, ResponseBuilder, path::ParameterIn};
        let error = |status: StatusCode| {
            ResponseBuilder::new()
                .description(status.canonical_reason().unwrap_or("error"))
                .content("application/json", ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody"))).build())
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten() {
                let mut statuses = vec![StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::MISDIRECTED_REQUEST, StatusCode::URI_TOO_LONG];
                statuses.extend([StatusCode::UNPROCESSABLE_ENTITY, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, StatusCode::SERVICE_UNAVAILABLE]);
                if op.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Path) {
                    statuses.push(StatusCode::NOT_FOUND);
                }
                if op.request_body.is_some() {
                    statuses.extend([StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNSUPPORTED_MEDIA_TYPE]);
                }
                for status in statuses {
                    op.responses.responses.entry(status.as_u16().to_string()).or_insert_with(|| error(status).into());
                }
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match &e {
            CatalogError::NotFound { .. } => ApiError::not_found(e.to_string()),
            CatalogError::Conflict { .. } | CatalogError::InvalidTransition { .. } => ApiError::conflict(e.to_string()),
            // what the database said stays in the server's log: it can name tables, hosts and users
            CatalogError::Unavailable(_) | CatalogError::Busy(_) => {
                tracing::warn!(error = %e, "catalog unavailable");
                ApiError::unavailable("the catalog is unavailable; try again shortly")
            }
            _ => {
                tracing::error!(error = %e, "catalog error");
                ApiError::internal("the catalog failed; the server's log says why")
            }
        }
    }
}

/// An image (upload or indexed file) that cannot be decoded: the client's file is at fault (4xx),
/// except when the server has no thread to decode on (503).
impl From<clip::ImageError> for ApiError {
    fn from(e: clip::ImageError) -> Self {
        match &e {
            clip::ImageError::FileTooLarge { .. } => ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, code: "payload_too_large", message: e.to_string() },
            // the server's trouble, not the file's: try again later
            clip::ImageError::Busy(_) | clip::ImageError::DecodeTimeout(_) => ApiError::unavailable(e.to_string()),
            clip::ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ApiError::not_found(e.to_string()),
            clip::ImageError::Io { .. } => ApiError::unavailable(e.to_string()),
            _ => ApiError::bad_request(format!("not a usable image ({}): {e}", e.reason())),
        }
    }
}

impl From<crate::sessions::RunnerError> for ApiError {
    fn from(e: crate::sessions::RunnerError) -> Self {
        use crate::sessions::RunnerError as R;
        match e {
            R::Conflict(m) => ApiError::conflict(m),
            R::Unavailable(m) => ApiError::unavailable(m),
            R::Unprocessable(m) => ApiError::unprocessable(m),
            R::Catalog(c) => c.into(),
            R::Vectors(v) => v.into(),
            R::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<VectorError> for ApiError {
    fn from(e: VectorError) -> Self {
        match &e {
            VectorError::Unavailable(_) | VectorError::InUse(_) => ApiError::unavailable(e.to_string()),
            VectorError::InvalidRequest(_) => ApiError::bad_request(e.to_string()),
            VectorError::NoCollection(_) => ApiError::not_found(e.to_string()),
            _ => {
                tracing::error!(error = %e, "vector store error");
                ApiError::internal("the vector store failed; the server's log says why")
            }
        }
    }
}

impl From<crate::manage::ManageError> for ApiError {
    fn from(e: crate::manage::ManageError) -> Self {
        match e {
            crate::manage::ManageError::ConfirmationRequired(m) => ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "confirmation_required", message: m },
            crate::manage::ManageError::Vectors(v) => v.into(),
            crate::manage::ManageError::Catalog(c) => c.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::unprocessable(e.body_text()),
            // a body over the limit is 413, a wrong content type 415: the rejection's own status
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, code: "payload_too_large", message: format!("the body is larger than {} bytes", super::JSON_BODY_LIMIT) }
            }
            other if other.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, code: "unsupported_media_type", message: other.body_text() }
            }
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::unprocessable(r.body_text())
    }
}

/// `snake_case` -> `camelCase`; a camelCase name stays as it is.
pub(crate) fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Every object key in `v` (nested too) in camelCase.
fn camel_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(map.into_iter().map(|(k, v)| (camel(&k), camel_keys(v))).collect()),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(camel_keys).collect()),
        other => other,
    }
}

/// A JSON body, with keys in either spelling (see the module docs); its rejections answer in the
/// error shape. The types it reads are camelCase and `deny_unknown_fields`.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        // every body this API takes is an object: serde would read a struct from an array too
        // (`["a red circle"]` as a search), which no client means
        if !value.is_object() {
            return Err(ApiError::unprocessable("request body: expected a JSON object"));
        }
        let value = camel_keys(value);
        serde_path_to_error::deserialize(value).map(ApiJson).map_err(|e| {
            let at = e.path().to_string();
            let what = e.into_inner();
            if at == "." { ApiError::unprocessable(format!("request body: {what}")) } else { ApiError::unprocessable(format!("request body at {at}: {what}")) }
        })
    }
}

/// Query parameters, with names in either spelling (see the module docs); an unknown one, a
/// repeated one or a value of the wrong type is a 422 that names it.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (camel(&k), v)).collect();
        let normalised = serde_urlencoded::to_string(&pairs).map_err(|e| ApiError::internal(e.to_string()))?;
        serde_urlencoded::from_str(&normalised).map(ApiQuery).map_err(|e| ApiError::unprocessable(format!("query parameters: {e}")))
    }
}

#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[cfg(test)]
mod tests {
    use super::camel;

    #[test]
    fn names_in_either_spelling_read_the_same() {
        assert_eq!(camel("page_size"), "pageSize");
        assert_eq!(camel("pageSize"), "pageSize");
        assert_eq!(camel("include_training_status"), "includeTrainingStatus");
        assert_eq!(camel("_private"), "_private");
        assert_eq!(camel("limit"), "limit");
    }
}
