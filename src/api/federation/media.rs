//! `/_matrix/federation/v1/media/{download,thumbnail}/{mediaId}`: our local media for other
//! servers, as `multipart/mixed`: a JSON part (`{}`, metadata to come), then the file.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::auth::Origin;
use crate::{
    api::{
        client::media::{ThumbnailQuery, content_disposition, thumbnail_of},
        extract::{Path, Query},
    },
    error::Result,
    service::{
        Services,
        media::{self, Content, Fetch},
        secrets,
    },
};

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

pub async fn download(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(query): Query<DownloadQuery>,
    Origin(_origin): Origin,
) -> Result<Response> {
    let timeout = query.timeout_ms.map_or(media::DEFAULT_TIMEOUT, Duration::from_millis).min(media::MAX_TIMEOUT);
    let fetch = Fetch { allow_remote: false, timeout };
    let content = services.media.download(&services.config.server_name, &media_id, fetch).await?;
    Ok(multipart(content))
}

/// Only our own media: `allow_remote` is forced off, as other servers must ask the origin.
pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(mut query): Query<ThumbnailQuery>,
    Origin(_origin): Origin,
) -> Result<Response> {
    query.allow_remote = false;
    let server = services.config.server_name.clone();
    thumbnail_of(&services, &server, &media_id, &query).await.map(multipart)
}

fn multipart(content: Content) -> Response {
    let boundary = secrets::random_string(32);
    let disposition = content_disposition(content.content_type.as_deref(), content.filename.as_deref());
    let content_type = content.content_type.as_deref().unwrap_or("application/octet-stream");
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&content.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut response = (StatusCode::OK, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
