//! The media repository over HTTP: uploads, downloads, async uploads, thumbnails, limits, and
//! media fetched from another server.

use std::{io::Cursor, path::Path, time::Duration};

use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;

use crate::server::{TestServer, User, assert_error};

/// An answer with its raw body and headers.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    #[track_caller]
    fn error(&self, status: u16, errcode: &str) {
        assert_error(&(self.status, self.json()), status, errcode);
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// A GET (the future owns everything it needs, so paths may be temporaries).
fn get(server: &TestServer, path: &str, token: Option<&str>) -> impl Future<Output = Reply> + use<> {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request)
}

async fn upload(server: &TestServer, user: &User, bytes: &[u8], content_type: &str, filename: Option<&str>) -> Reply {
    let mut url = reqwest::Url::parse(&server.url("/_matrix/media/v3/upload")).unwrap();
    if let Some(name) = filename {
        url.query_pairs_mut().append_pair("filename", name);
    }
    let request = reqwest::Client::new()
        .post(url)
        .bearer_auth(&user.token)
        .header("Content-Type", content_type)
        .body(bytes.to_vec());
    send(request).await
}

/// `(server, media_id)` of an `mxc://` URI.
fn parts(uri: &str) -> (String, String) {
    let rest = uri.strip_prefix("mxc://").unwrap();
    let (server, id) = rest.split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([x as u8, y as u8, 128, 255]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    image::load_from_memory(bytes).unwrap().into_rgba8().dimensions()
}

/// Files under the media directory, temporary ones included.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.map(|entry| entry.unwrap().path()).map(|path| if path.is_dir() { files_under(&path) } else { 1 }).sum()
}

#[tokio::test]
async fn upload_and_download_with_type_and_name() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let name = "notes \u{2615} été.txt";
    let reply = upload(&server, &alice, b"hello media", "text/plain; charset=utf-8", Some(name)).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let uri = reply.json()["content_uri"].as_str().unwrap().to_owned();
    let (origin, id) = parts(&uri);
    assert_eq!(origin, "test.local");
    assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");

    for (path, token) in [
        (format!("/_matrix/media/v3/download/{origin}/{id}"), None),
        (format!("/_matrix/client/v1/media/download/{origin}/{id}"), alice.tok()),
    ] {
        let reply = get(&server, &path, token).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, b"hello media");
        assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(
            reply.header("content-disposition"),
            "inline; filename*=utf-8''notes%20%E2%98%95%20%C3%A9t%C3%A9.txt"
        );
        assert!(reply.header("content-security-policy").starts_with("sandbox; default-src 'none'"));
        assert_eq!(reply.header("cross-origin-resource-policy"), "cross-origin");
    }
    // A trailing slash (matrix-nio sends one) is no file name.
    let reply = get(&server, &format!("/_matrix/client/v1/media/download/{origin}/{id}/"), alice.tok()).await;
    assert_eq!((reply.status.as_u16(), reply.body.as_slice()), (200, &b"hello media"[..]));
    // A name in the path replaces the stored one.
    let reply = get(&server, &format!("/_matrix/client/v1/media/download/{origin}/{id}/other.txt"), alice.tok()).await;
    assert_eq!(reply.header("content-disposition"), "inline; filename=\"other.txt\"");

    // Unsafe types are attachments; no name, no filename parameter.
    let reply = upload(&server, &alice, b"<svg/>", "image/svg+xml", None).await;
    let (_, svg) = parts(reply.json()["content_uri"].as_str().unwrap());
    let reply = get(&server, &format!("/_matrix/media/v3/download/{origin}/{svg}"), None).await;
    assert_eq!((reply.header("content-type"), reply.header("content-disposition")), ("image/svg+xml", "attachment"));

    // The authenticated endpoints want a token; unknown media is 404; so is a malformed ID.
    get(&server, &format!("/_matrix/client/v1/media/download/{origin}/{id}"), None).await.error(401, "M_MISSING_TOKEN");
    get(&server, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{id}?width=1&height=1"), None)
        .await
        .error(401, "M_MISSING_TOKEN");
    get(&server, &format!("/_matrix/client/v1/media/download/{origin}/nope"), alice.tok())
        .await
        .error(404, "M_NOT_FOUND");
    get(&server, &format!("/_matrix/media/v3/download/{origin}/a.b"), None).await.error(404, "M_NOT_FOUND");
    // Uploads need a token too.
    let reply = send(reqwest::Client::new().post(server.url("/_matrix/media/v3/upload")).body("x")).await;
    reply.error(401, "M_MISSING_TOKEN");

    for path in ["/_matrix/media/v3/config", "/_matrix/client/v1/media/config"] {
        let reply = get(&server, path, alice.tok()).await;
        assert_eq!(reply.json()["m.upload.size"], 50 * 1024 * 1024);
    }
    // Uploads may be larger than the general body limit (1 MiB), and come back whole, streamed.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let reply = upload(&server, &alice, &big, "application/octet-stream", Some("big.bin")).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let (_, big_id) = parts(reply.json()["content_uri"].as_str().unwrap());
    let reply = get(&server, &format!("/_matrix/client/v1/media/download/{origin}/{big_id}"), alice.tok()).await;
    assert_eq!(
        (reply.header("content-length"), reply.header("content-disposition")),
        ("3000000", "attachment; filename=\"big.bin\"")
    );
    assert!(reply.body == big);

    // URL previews are not offered, and say so.
    get(&server, "/_matrix/client/v1/media/preview_url?url=https://example.org", alice.tok())
        .await
        .error(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn too_large_uploads_are_refused_and_leave_nothing() {
    let server = TestServer::start_with(&[("MYELIN_MEDIA__MAX_UPLOAD_BYTES", "1000")]).await;
    let alice = server.register("alice", "pw").await;
    let media_dir = server.database_path().join("media");
    let before = files_under(&media_dir);
    upload(&server, &alice, &[7; 1001], "application/octet-stream", None).await.error(413, "M_TOO_LARGE");
    // Without a Content-Length, the stream is cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1; 600]), Ok(vec![2; 600])];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let request =
        reqwest::Client::new().post(server.url("/_matrix/media/v3/upload")).bearer_auth(&alice.token).body(body);
    send(request).await.error(413, "M_TOO_LARGE");
    assert_eq!(files_under(&media_dir), before);
    // At the limit is fine.
    let reply = upload(&server, &alice, &[7; 1000], "application/octet-stream", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(get(&server, "/_matrix/client/v1/media/config", alice.tok()).await.json()["m.upload.size"], 1000);
}

#[tokio::test]
async fn uploads_are_rate_limited_per_user() {
    let server = TestServer::start_with(&[
        ("MYELIN_RATE_LIMITS__ENABLED", "true"),
        ("MYELIN_RATE_LIMITS__MEDIA_UPLOADS__PER_SECOND", "0.01"),
        ("MYELIN_RATE_LIMITS__MEDIA_UPLOADS__BURST", "2"),
    ])
    .await;
    let alice = server.register("alice", "pw").await;
    for _ in 0..2 {
        assert_eq!(upload(&server, &alice, b"x", "text/plain", None).await.status, 200);
    }
    upload(&server, &alice, b"x", "text/plain", None).await.error(429, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn async_uploads_belong_to_their_creator_and_happen_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let (status, created) = server.post("/_matrix/media/v1/create", alice.tok(), serde_json::json!({})).await;
    assert_eq!(status, 200, "{created}");
    assert!(created["unused_expires_at"].as_u64().unwrap() > 0);
    let (origin, id) = parts(created["content_uri"].as_str().unwrap());
    let download = format!("/_matrix/client/v1/media/download/{origin}/{id}");

    get(&server, &format!("{download}?timeout_ms=100"), alice.tok()).await.error(504, "M_NOT_YET_UPLOADED");

    let put = |user: &User, body: &'static [u8]| {
        let request = reqwest::Client::new()
            .put(server.url(&format!("/_matrix/media/v3/upload/{origin}/{id}?filename=late.png")))
            .bearer_auth(&user.token)
            .header("Content-Type", "image/png")
            .body(body);
        send(request)
    };
    put(&bob, b"mallory").await.error(403, "M_FORBIDDEN");

    // A download waiting for the content gets it once it comes.
    let waiting = get(&server, &format!("{download}?timeout_ms=10000"), alice.tok());
    let uploading = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        put(&alice, b"the content").await
    };
    let (waited, uploaded) = tokio::join!(waiting, uploading);
    assert_eq!(uploaded.status, 200, "{}", uploaded.json());
    assert_eq!((waited.status, waited.body.as_slice()), (StatusCode::OK, &b"the content"[..]));
    assert_eq!(waited.header("content-disposition"), "inline; filename=\"late.png\"");

    put(&alice, b"again").await.error(409, "M_CANNOT_OVERWRITE_MEDIA");
    assert_eq!(get(&server, &download, alice.tok()).await.body, b"the content");
    let reply = send(
        reqwest::Client::new()
            .put(server.url(&format!("/_matrix/media/v3/upload/{origin}/unknownid")))
            .bearer_auth(&alice.token)
            .body("x"),
    )
    .await;
    reply.error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn thumbnails_have_the_requested_size_and_are_cached() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let image = png(200, 100);
    let reply = upload(&server, &alice, &image, "image/png", Some("big.png")).await;
    let (origin, id) = parts(reply.json()["content_uri"].as_str().unwrap());
    let thumbnail =
        |query: &str| get(&server, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{id}?{query}"), alice.tok());

    let scaled = thumbnail("width=50&height=50&method=scale").await;
    assert_eq!(scaled.status, 200, "{}", scaled.json());
    assert_eq!(scaled.header("content-type"), "image/png");
    assert_eq!(dimensions(&scaled.body), (50, 25));
    let cropped = thumbnail("width=40&height=40&method=crop").await;
    assert_eq!(dimensions(&cropped.body), (40, 40));
    // The same request again is the cached thumbnail, byte for byte; so is the legacy endpoint.
    assert_eq!(thumbnail("width=50&height=50&method=scale").await.body, scaled.body);
    let legacy = get(&server, &format!("/_matrix/media/v3/thumbnail/{origin}/{id}?width=50&height=50"), None).await;
    assert_eq!(legacy.body, scaled.body);
    // Never upscaled: bigger than the image is the original.
    assert_eq!(thumbnail("width=400&height=400&method=scale").await.body, image);

    thumbnail("width=50&height=50&method=stretch").await.error(400, "M_INVALID_PARAM");
    thumbnail("height=50").await.error(400, "M_MISSING_PARAM");
    let reply = upload(&server, &alice, b"plain text", "text/plain", None).await;
    let (_, text) = parts(reply.json()["content_uri"].as_str().unwrap());
    get(&server, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{text}?width=32&height=32"), alice.tok())
        .await
        .error(400, "M_UNKNOWN");
    // Something that claims to be a PNG but is not.
    let reply = upload(&server, &alice, b"\x89PNG\r\n\x1a\nbroken", "image/png", None).await;
    let (_, broken) = parts(reply.json()["content_uri"].as_str().unwrap());
    get(&server, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{broken}?width=32&height=32"), alice.tok())
        .await
        .error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn images_with_too_many_pixels_are_not_thumbnailed() {
    let server = TestServer::start_with(&[("MYELIN_MEDIA__MAX_THUMBNAIL_PIXELS", "10000")]).await;
    let alice = server.register("alice", "pw").await;
    let reply = upload(&server, &alice, &png(200, 100), "image/png", None).await;
    let (origin, id) = parts(reply.json()["content_uri"].as_str().unwrap());
    get(&server, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{id}?width=32&height=32"), alice.tok())
        .await
        .error(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn remote_media_is_fetched_over_federation_and_cached() {
    let mut one = TestServer::start_federating(&[]).await;
    // Fetches files of up to 60 000 bytes (the PNG is at most 38 400 bytes and PNG framing).
    let two = TestServer::start_federating(&[("MYELIN_MEDIA__MAX_UPLOAD_BYTES", "60000")]).await;
    let alice = one.register("alice", "pw").await;
    let bob = two.register("bob", "pw").await;
    let image = png(120, 80);
    let reply = upload(&one, &alice, &image, "image/png", Some("\u{1F414}.png")).await;
    let uri = reply.json()["content_uri"].as_str().unwrap().to_owned();
    let (origin, id) = parts(&uri);
    assert_eq!(origin, one.server_name);

    let download = format!("/_matrix/client/v1/media/download/{origin}/{id}");
    // Not cached yet, and not to be fetched.
    get(&two, &format!("{download}?allow_remote=false"), bob.tok()).await.error(404, "M_NOT_FOUND");
    let reply = get(&two, &download, bob.tok()).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, image);
    assert_eq!(reply.header("content-type"), "image/png");
    assert_eq!(reply.header("content-disposition"), "inline; filename*=utf-8''%F0%9F%90%94.png");
    let thumbnail =
        get(&two, &format!("/_matrix/client/v1/media/thumbnail/{origin}/{id}?width=30&height=30"), bob.tok()).await;
    assert_eq!(dimensions(&thumbnail.body), (30, 20));
    get(&two, &format!("/_matrix/client/v1/media/download/{origin}/unknown"), bob.tok())
        .await
        .error(404, "M_NOT_FOUND");
    // A remote file above our limit is not fetched: 502 M_TOO_LARGE, as the spec says.
    let reply = upload(&one, &alice, &[9; 100_000], "application/octet-stream", None).await;
    let (_, big) = parts(reply.json()["content_uri"].as_str().unwrap());
    get(&two, &format!("/_matrix/client/v1/media/download/{origin}/{big}"), bob.tok()).await.error(502, "M_TOO_LARGE");

    // Cached: served with the origin gone.
    one.terminate();
    let reply = get(&two, &format!("/_matrix/media/v3/download/{origin}/{id}"), None).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, image));
}
