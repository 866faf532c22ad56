//! The built-in web client (`web/` at the top of the repository), compiled into the binary so that
//! `/` works with no other server, no CDN and no network. It is plain HTML, CSS and JavaScript
//! modules that talk to the public client-server API only; see `web/README.md`.
//!
//! Each file is served with its content type, a strong ETag (a hash of its bytes, so a browser
//! revalidates cheaply and never runs a stale mix of files) and a strict Content-Security-Policy:
//! scripts and styles from this origin only, nothing inline, no frames.

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use crate::service::Services;

/// The client's files: the path served, the content type, the bytes.
const ASSETS: [(&str, &str, &[u8]); 6] = [
    ("/index.html", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("/matrix.js", "text/javascript; charset=utf-8", include_bytes!("../../web/matrix.js")),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("../../web/style.css")),
    ("/favicon.svg", "image/svg+xml", include_bytes!("../../web/favicon.svg")),
    ("/manifest.webmanifest", "application/manifest+json", include_bytes!("../../web/manifest.webmanifest")),
];

/// Same-origin scripts, styles and requests (WebSockets included); images also from `blob:` URLs
/// (media fetched with the access token) and `data:`; nothing else, and no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The routes of the web client: `/` (the page) and each file. Nothing else: every other path
/// still reaches the router's Matrix 404.
pub fn routes() -> Router<Arc<Services>> {
    let mut router = Router::new();
    for (path, content_type, bytes) in ASSETS {
        let asset = Asset::new(content_type, bytes);
        if path == "/index.html" {
            let page = asset.clone();
            router = router.route("/", get(move |headers: HeaderMap| async move { page.serve(&headers) }));
        }
        router = router.route(path, get(move |headers: HeaderMap| async move { asset.serve(&headers) }));
    }
    router
}

#[derive(Clone)]
struct Asset {
    content_type: &'static str,
    bytes: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, bytes: &'static [u8]) -> Self {
        let hash = hex::encode(&Sha256::digest(bytes)[..12]);
        let etag = HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex is a valid header value");
        Self { content_type, bytes, etag }
    }

    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == self.etag || tag.trim() == "*"));
        let headers = [
            (header::ETAG, self.etag.clone()),
            // Revalidate every time: the names are fixed, so a cached copy may be of an older build.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (headers, [(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type))], self.bytes).into_response()
    }
}
