//! The media repository's client API: upload (`/_matrix/media/v3/upload`, async `/create` then
//! `PUT /upload/{server}/{id}`), download and thumbnails, unauthenticated under
//! `/_matrix/media/v3` (deprecated) and with an access token under `/_matrix/client/v1/media`,
//! and the upload limit (`/config`). URL previews are not offered (their route is unknown, 404).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use crate::{
    api::extract::{Auth, ClientIp, Path, Query},
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        media::{self, Content, Fetch, files::Staged, thumbnail::Method},
        rate_limit::Limit,
    },
};

/// The spec's recommended policy for served content: nothing in it runs or loads anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Types served `inline` (the spec's list); everything else is an `attachment`.
const INLINE_TYPES: [&str; 26] = [
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

pub async fn upload(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::MediaUpload, &session, &ip)?;
    let staged = receive(&services, &headers, body).await?;
    let uri = services.media.upload(&session.user_id, staged, content_type(&headers), query.filename).await?;
    Ok(Json(json!({ "content_uri": uri })))
}

pub async fn create(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    ClientIp(ip): ClientIp,
) -> Result<Json<Value>> {
    services.check_user_rate(Limit::MediaUpload, &session, &ip)?;
    let (uri, expires_at) = services.media.create(&session.user_id).await?;
    Ok(Json(json!({ "content_uri": uri, "unused_expires_at": expires_at })))
}

pub async fn upload_async(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((server, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    services.media.check_async_upload(&session.user_id, &server, &media_id)?;
    let staged = receive(&services, &headers, body).await?;
    services
        .media
        .upload_async(&session.user_id, &server, &media_id, staged, content_type(&headers), query.filename)
        .await?;
    Ok(Json(json!({})))
}

/// Streams the body to a temporary file, refusing it past the upload limit (`413 M_TOO_LARGE`,
/// at once when `Content-Length` says so).
async fn receive(services: &Services, headers: &HeaderMap, mut body: Body) -> Result<Staged> {
    let limit = services.media.max_upload_bytes();
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > limit) {
        return Err(Error::new(ErrorKind::TooLarge, format!("Uploads are limited to {limit} bytes")));
    }
    let mut staged = services.media.stage().await?;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::new(ErrorKind::Unknown, format!("Could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            staged.write(&data).await?;
        }
    }
    Ok(staged)
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    #[serde(default = "yes")]
    allow_remote: bool,
    timeout_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

fn fetch_options(allow_remote: bool, timeout_ms: Option<u64>) -> Fetch {
    let timeout = timeout_ms.map_or(media::DEFAULT_TIMEOUT, Duration::from_millis).min(media::MAX_TIMEOUT);
    Fetch { allow_remote, timeout }
}

/// `GET …/download/{serverName}/{mediaId}`, without a token (legacy).
pub async fn download_legacy(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    download_as(&services, &server, &media_id, None, &query).await
}

pub async fn download_legacy_named(
    State(services): State<Arc<Services>>,
    Path((server, media_id, filename)): Path<(OwnedServerName, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    download_as(&services, &server, &media_id, Some(filename), &query).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
pub async fn download(
    State(services): State<Arc<Services>>,
    _auth: AnyAuth,
    Path((server, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    download_as(&services, &server, &media_id, None, &query).await
}

pub async fn download_named(
    State(services): State<Arc<Services>>,
    _auth: AnyAuth,
    Path((server, media_id, filename)): Path<(OwnedServerName, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    download_as(&services, &server, &media_id, Some(filename), &query).await
}

/// Any access token, guests' included (they may read the rooms they are in, media and all).
pub type AnyAuth = crate::api::extract::GuestAuth;

async fn download_as(
    services: &Services,
    server: &OwnedServerName,
    media_id: &str,
    filename: Option<String>,
    query: &DownloadQuery,
) -> Result<Response> {
    let opened = services.media.open(server, media_id, fetch_options(query.allow_remote, query.timeout_ms)).await?;
    let filename = filename.or(opened.filename);
    let mut response = (StatusCode::OK, Body::from_stream(ReaderStream::new(opened.file))).into_response();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(opened.size));
    add_content_headers(&mut response, opened.content_type, filename.as_deref());
    Ok(response)
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
    /// Animated thumbnails are not made; a still one (or the original) is the answer, as the spec
    /// allows.
    #[allow(dead_code)]
    animated: Option<bool>,
    #[serde(default = "yes")]
    pub allow_remote: bool,
    timeout_ms: Option<u64>,
}

pub async fn thumbnail_legacy(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    thumbnail_of(&services, &server, &media_id, &query).await.map(content_response)
}

pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    _auth: AnyAuth,
    Path((server, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    thumbnail_of(&services, &server, &media_id, &query).await.map(content_response)
}

pub async fn thumbnail_of(
    services: &Services,
    server: &OwnedServerName,
    media_id: &str,
    query: &ThumbnailQuery,
) -> Result<Content> {
    let method = Method::parse(query.method.as_deref().unwrap_or("scale"))?;
    let fetch = fetch_options(query.allow_remote, query.timeout_ms);
    services.media.thumbnail(server, media_id, (query.width, query.height, method), fetch).await
}

pub async fn config(State(services): State<Arc<Services>>, _auth: AnyAuth) -> Json<Value> {
    Json(json!({ "m.upload.size": services.media.max_upload_bytes() }))
}

/// A file as a response, with the headers that keep a browser from running it.
pub fn content_response(content: Content) -> Response {
    let mut response = (StatusCode::OK, content.bytes).into_response();
    add_content_headers(&mut response, content.content_type, content.filename.as_deref());
    response
}

fn add_content_headers(response: &mut Response, content_type: Option<String>, filename: Option<&str>) {
    let disposition = content_disposition(content_type.as_deref(), filename);
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Media never changes under its ID.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400, s-maxage=86400"));
}

/// `inline` for the spec's safe types, `attachment` otherwise; the file name as a quoted string
/// when it is plain ASCII, else percent-encoded UTF-8 (`filename*`, RFC 6266).
pub fn content_disposition(content_type: Option<&str>, filename: Option<&str>) -> String {
    let essence = content_type.map(media::essence).unwrap_or_default();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    match filename {
        None => kind.to_owned(),
        Some(name) if name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') => {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{kind}; filename*=utf-8''{encoded}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition(Some("image/png"), None), "inline");
        assert_eq!(content_disposition(Some("Text/Plain; charset=utf-8"), Some("a b;c")), "inline; filename=\"a b;c\"");
        assert_eq!(content_disposition(Some("image/svg+xml"), Some("x.svg")), "attachment; filename=\"x.svg\"");
        assert_eq!(
            content_disposition(None, Some("\u{2615} \"q\"")),
            "attachment; filename*=utf-8''%E2%98%95%20%22q%22"
        );
    }
}
