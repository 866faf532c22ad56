//! The HTTP layer: thin axum handlers, one file per Matrix area. Handlers parse and authorize,
//! call a service, and shape the reply; every failure leaves as a Matrix error body.

mod client;
mod error;
mod extract;
mod federation;
mod synapse_admin;
mod web;

/// For the fuzz targets (`crate::fuzzing`).
pub use federation::auth::parse_x_matrix;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

use crate::{
    error::{Error, ErrorKind},
    service::Services,
};

/// Federation bodies may be larger than client ones: a transaction carries up to 50 PDUs of 64 KiB.
const FEDERATION_MIN_BODY: usize = 8 * 1024 * 1024;

/// The federation router, for the TLS listener: the federation and key APIs only.
pub fn federation_router(services: Arc<Services>) -> Router {
    let max_body = services.config.limits.max_request_size.max(FEDERATION_MIN_BODY);
    federation::routes()
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(federation::auth::hold_origin_permit))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(trace_layer())
        .with_state(services)
}

/// The client-facing router (client API, Synapse-compatible admin endpoints, health, and the
/// built-in web client at `/`).
pub fn router(services: Arc<Services>) -> Router {
    let max_body = services.config.limits.max_request_size;
    let web_client = if services.config.web_client.enabled { web::routes() } else { Router::new() };
    Router::new()
        .merge(web_client)
        .nest("/_matrix/client/v3", client::v3_routes())
        // Older clients still use r0 paths; the endpoints are the same.
        .nest("/_matrix/client/r0", client::v3_routes())
        .nest("/_matrix/client/v1", client::v1_routes())
        .nest("/_matrix/media/v3", client::media_routes())
        .nest("/_matrix/media/r0", client::media_routes())
        .route("/_matrix/media/v1/create", post(client::media::create))
        .route("/_matrix/client/versions", get(client::discovery::versions))
        .route("/_matrix/client/unstable/io.myelin.websocket/stream", get(client::websocket::stream))
        .route("/.well-known/matrix/client", get(client::discovery::well_known_client))
        .route("/.well-known/matrix/server", get(client::discovery::well_known_server))
        .merge(synapse_admin::routes())
        .route("/health", get(|| async { "OK" }))
        .fallback(unrecognized)
        // Last, so that it reaches every route added above.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(answer_options))
        .layer(cors())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(trace_layer())
        .with_state(services)
}

/// A `request` span per request with method and path (never the query string, which can carry
/// an access token), and the status and latency at debug level.
#[allow(clippy::type_complexity)] // The layer's type, closures and all: naming it is all it takes.
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&Request<Body>) -> tracing::Span + Clone,
    (),
    impl Fn(&Response, Duration, &tracing::Span) + Clone,
> {
    TraceLayer::new_for_http()
        .make_span_with(|request: &Request<Body>| {
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                user = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|response: &Response, latency: Duration, _span: &tracing::Span| {
            tracing::debug!(status = response.status().as_u16(), latency_ms = latency.as_millis() as u64, "response");
        })
}

async fn unrecognized() -> Error {
    Error::new(ErrorKind::Unrecognized, "Unrecognized request")
}

async fn method_not_allowed() -> Error {
    Error::new(ErrorKind::MethodNotAllowed, "Method not allowed for this endpoint")
}

/// The spec: every endpoint answers OPTIONS (with CORS headers) without running its logic.
/// Preflight requests are answered by the CORS layer before they get here.
async fn answer_options(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response();
    }
    next.run(request).await
}

/// The CORS headers the spec recommends, so that browser clients can talk to us from any origin.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([HeaderName::from_static("x-requested-with"), header::CONTENT_TYPE, header::AUTHORIZATION])
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    Error::internal(format!("handler panicked: {message}")).into_response()
}
