//! The one place where errors become HTTP answers: `{"error": code, "message": text}` everywhere.
//! Invalid input is 400/404/409/422, a store that cannot be reached is 503, never a bare 500 for
//! something the caller can fix.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
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
        (self.status, Json(ErrorBody { error: self.code, message: self.message })).into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match &e {
            CatalogError::NotFound { .. } => ApiError::not_found(e.to_string()),
            CatalogError::Conflict { .. } | CatalogError::InvalidTransition { .. } => ApiError::conflict(e.to_string()),
            CatalogError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
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
            _ => ApiError::internal(e.to_string()),
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
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

/// `Json` whose rejections answer in the error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
