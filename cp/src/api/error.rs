//! API errors, answered as Kubernetes `Status` objects so kubectl prints them well.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use riptides_wire::resource::{FieldError, Status, StatusCause, StatusDetails};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{kind} {name:?} is invalid: {}", .causes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid { kind: String, name: String, causes: Vec<FieldError> },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request entity too large: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "Expired"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    pub fn status(&self) -> Status {
        let (code, reason) = self.parts();
        let mut status = Status::failure(code.as_u16(), reason, self.to_string());
        if let ApiError::Invalid { kind, name, causes } = self {
            status.details = Some(StatusDetails {
                name: Some(name.clone()),
                kind: Some(kind.clone()),
                group: None,
                causes: causes
                    .iter()
                    .map(|c| StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: c.message.clone(),
                        field: c.field.clone(),
                    })
                    .collect(),
            });
        }
        status
    }

    /// Maps a store error for the object `what` (e.g. `workloadidentities "web"`).
    pub fn from_store(err: StoreError, what: &str) -> Self {
        match err {
            StoreError::NotFound { .. } => ApiError::NotFound(format!("{what} not found")),
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(format!("{what} already exists")),
            StoreError::Conflict { .. } => ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"
            )),
            StoreError::Gone { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::InvalidKey { reason } => ApiError::BadRequest(reason),
            StoreError::ValueTooLarge { size, max } => ApiError::TooLarge(format!("{size} bytes exceeds {max}")),
            e @ (StoreError::WatchLagged { .. } | StoreError::Backend(_)) => {
                tracing::error!(error = %e, %what, "store failure");
                ApiError::Internal(format!("storage error on {what}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.parts();
        if code.is_server_error() {
            tracing::warn!(error = %self, "API request failed");
        } else {
            tracing::debug!(error = %self, "API request refused");
        }
        (code, Json(self.status())).into_response()
    }
}
