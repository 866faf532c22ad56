//! Turns [`Error`] into a Matrix error response: `{"errcode", "error"}` with the right status.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Matrix { kind, message } => {
                tracing::debug!(errcode = kind.errcode(), %message, "refused");
                matrix_error(&kind, &message)
            }
            Error::Uia(challenge) => (StatusCode::UNAUTHORIZED, Json(challenge.to_json())).into_response(),
            Error::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                matrix_error(&ErrorKind::Unknown, "Internal server error").with_status(500)
            }
            Error::Internal(message) => {
                tracing::error!(%message, "internal error");
                matrix_error(&ErrorKind::Unknown, "Internal server error").with_status(500)
            }
            Error::Remote(remote) => {
                tracing::info!(error = %remote, "federation request failed");
                matrix_error(&ErrorKind::Unknown, &remote.to_string()).with_status(502)
            }
        }
    }
}

fn matrix_error(kind: &ErrorKind, message: &str) -> Response {
    let mut body = Map::new();
    body.insert("errcode".into(), kind.errcode().into());
    body.insert("error".into(), message.into());
    kind.extra_fields(&mut body);
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(Value::Object(body))).into_response();
    if let ErrorKind::LimitExceeded { retry_after_ms } = kind {
        let seconds = retry_after_ms.div_ceil(1000).max(1);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

trait WithStatus {
    fn with_status(self, status: u16) -> Self;
}

impl WithStatus for Response {
    fn with_status(mut self, status: u16) -> Self {
        *self.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self
    }
}
