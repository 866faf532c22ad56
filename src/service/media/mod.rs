//! The media repository: uploads (at once, or created first and uploaded later), downloads of
//! local media and of other servers' media (fetched once, then cached), and thumbnails (made on
//! first request, then cached). Metadata is in the `media` columns; bytes are files (`files`).

pub mod files;
pub mod remote;
pub mod thumbnail;

use std::{sync::Arc, time::Duration};

use ruma::{ServerName, UserId};
use tokio::sync::{Notify, Semaphore};

use self::{
    files::{Files, Staged},
    thumbnail::Method,
};
use crate::{
    config::Config,
    error::{Error, ErrorKind, Result},
    service::{federation::client::FederationClient, locks::KeyedLocks, now_ms, secrets},
    storage::{Batch, MediaRecord, Storage, ThumbnailRecord},
};

/// How long media created for an async upload waits for its content (Synapse: 24 hours).
const UNUSED_EXPIRY_MS: u64 = 24 * 3600 * 1000;
/// How long a download waits for a pending upload or a remote server when the client does not
/// say (the spec's 20 s), and the most it may ask for.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest thumbnail side a client may ask for; bigger asks get the original anyway.
const MAX_THUMBNAIL_SIDE: u32 = 4096;

/// A file as served: its bytes and what the uploader said about it.
pub struct Content {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// A stored file opened for streaming, with what the uploader said about it.
pub struct Opened {
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// What a download may do.
#[derive(Clone, Copy)]
pub struct Fetch {
    /// Whether to ask the origin server for media we do not have.
    pub allow_remote: bool,
    /// How long to wait for a pending upload or the origin server.
    pub timeout: Duration,
}

pub struct Media {
    config: Arc<Config>,
    storage: Arc<Storage>,
    files: Files,
    client: Arc<FederationClient>,
    /// Wakes downloads waiting for async uploads.
    uploaded: Notify,
    /// One fetch or thumbnail generation per media ID at a time.
    busy: KeyedLocks<(String, String)>,
    /// Images decoded at once: each may take `max_thumbnail_pixels` × 8 bytes, so many at once
    /// (of different media) would take the memory and the cores.
    decoding: Semaphore,
}

impl Media {
    pub fn new(config: Arc<Config>, storage: Arc<Storage>, client: Arc<FederationClient>) -> Result<Self> {
        let files = Files::open(config.media_path())?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            config,
            storage,
            files,
            client,
            uploaded: Notify::new(),
            busy: KeyedLocks::default(),
            decoding: Semaphore::new(cores.clamp(1, 4)),
        })
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.config.media.max_upload_bytes
    }

    /// A temporary file for an upload's body, refused past the upload limit.
    pub async fn stage(&self) -> Result<Staged> {
        self.files.stage(self.max_upload_bytes()).await
    }

    /// Stores an upload and returns its `mxc://` URI.
    pub async fn upload(
        &self,
        user: &UserId,
        staged: Staged,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        let server = self.config.server_name.as_str();
        let media_id = secrets::random_string(24);
        self.store(server, &media_id, staged, content_type, filename, Some(user)).await?;
        Ok(format!("mxc://{server}/{media_id}"))
    }

    /// Creates a media ID for an async upload: its `mxc://` URI and when it expires unused.
    pub async fn create(&self, user: &UserId) -> Result<(String, u64)> {
        let server = self.config.server_name.as_str();
        let media_id = secrets::random_string(24);
        let now = now_ms();
        let record = MediaRecord {
            content_type: None,
            filename: None,
            size: 0,
            uploader: Some(user.to_owned()),
            created_ts: now,
            sha256: None,
            pending: true,
            unused_expires_at: Some(now + UNUSED_EXPIRY_MS),
        };
        let mut batch = Batch::new();
        batch.put_media(server, &media_id, &record);
        self.storage.commit(batch).await?;
        Ok((format!("mxc://{server}/{media_id}"), now + UNUSED_EXPIRY_MS))
    }

    /// Refuses an async upload that cannot succeed, before its body is read.
    pub fn check_async_upload(&self, user: &UserId, server: &ServerName, media_id: &str) -> Result<()> {
        if server != self.config.server_name {
            return Err(Error::not_found("Media not found"));
        }
        let record = self.storage.media(server.as_str(), media_id)?;
        match record {
            Some(record) if record.uploader.as_deref() != Some(user) => {
                Err(Error::forbidden("Only the creator of this media ID may upload to it"))
            }
            Some(record) if !record.pending => {
                Err(Error::new(ErrorKind::CannotOverwriteMedia, "Media ID already has content"))
            }
            Some(record) if record.unused_expires_at.is_some_and(|at| at < now_ms()) => {
                Err(Error::not_found("Media ID expired unused"))
            }
            Some(_) => Ok(()),
            None => Err(Error::not_found("Media not found")),
        }
    }

    /// Completes an async upload.
    pub async fn upload_async(
        &self,
        user: &UserId,
        server: &ServerName,
        media_id: &str,
        staged: Staged,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let _busy = self.busy.lock(&(server.to_string(), media_id.to_owned())).await;
        self.check_async_upload(user, server, media_id)?;
        self.store(server.as_str(), media_id, staged, content_type, filename, Some(user)).await?;
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// Makes the file durable, then records it (a crash between leaves only an unused file).
    async fn store(
        &self,
        server: &str,
        media_id: &str,
        staged: Staged,
        content_type: Option<String>,
        filename: Option<String>,
        uploader: Option<&UserId>,
    ) -> Result<MediaRecord> {
        let record = MediaRecord {
            content_type: content_type.filter(|t| !t.is_empty()),
            filename: filename.filter(|f| !f.is_empty()),
            size: staged.size,
            uploader: uploader.map(ToOwned::to_owned),
            created_ts: now_ms(),
            sha256: Some(staged.sha256()),
            pending: false,
            unused_expires_at: None,
        };
        self.files.persist(staged, &self.files.original(server, media_id)).await?;
        let mut batch = Batch::new();
        batch.put_media(server, media_id, &record);
        self.storage.commit(batch).await?;
        Ok(record)
    }

    /// A file by its `mxc://` parts: local, cached, or fetched from its server.
    pub async fn download(&self, server: &ServerName, media_id: &str, fetch: Fetch) -> Result<Content> {
        validate_media_id(media_id)?;
        if server == self.config.server_name {
            let record = self.wait_for_upload(server.as_str(), media_id, fetch.timeout).await?;
            return self.read(server.as_str(), media_id, record).await;
        }
        if let Some(content) = self.cached(server.as_str(), media_id).await? {
            return Ok(content);
        }
        if !fetch.allow_remote {
            return Err(Error::not_found("Remote media is not cached here, and allow_remote is false"));
        }
        let _busy = self.busy.lock(&(server.to_string(), media_id.to_owned())).await;
        // Someone else may have fetched it while we waited.
        if let Some(content) = self.cached(server.as_str(), media_id).await? {
            return Ok(content);
        }
        let fetched =
            tokio::time::timeout(fetch.timeout, remote::fetch(&self.client, server, media_id, self.max_upload_bytes()))
                .await
                .map_err(|_| Error::unreachable(server, "timed out fetching media"))?
                .map_err(|e| match e {
                    Error::Remote(remote) if remote.status == Some(404) => Error::not_found("Remote media not found"),
                    other => other,
                })?;
        let mut staged = self.files.stage(u64::MAX).await?;
        staged.write(&fetched.bytes).await?;
        let record =
            self.store(server.as_str(), media_id, staged, fetched.content_type, fetched.filename, None).await?;
        Ok(Content { bytes: fetched.bytes, content_type: record.content_type, filename: record.filename })
    }

    /// Like [`Media::download`], but the file opened rather than read, for serving it as a
    /// stream (a file may be as large as the upload limit).
    pub async fn open(&self, server: &ServerName, media_id: &str, fetch: Fetch) -> Result<Opened> {
        validate_media_id(media_id)?;
        if server == self.config.server_name {
            self.wait_for_upload(server.as_str(), media_id, fetch.timeout).await?;
        } else if let Some(opened) = self.open_stored(server.as_str(), media_id).await? {
            return Ok(opened);
        } else {
            self.download(server, media_id, fetch).await?;
        }
        self.open_stored(server.as_str(), media_id).await?.ok_or_else(|| Error::not_found("Media not found"))
    }

    async fn open_stored(&self, server: &str, media_id: &str) -> Result<Option<Opened>> {
        let Some(record) = self.storage.media(server, media_id)?.filter(|r| !r.pending) else { return Ok(None) };
        let Some((file, size)) = self.files.open_file(&self.files.original(server, media_id)).await? else {
            return Ok(None);
        };
        Ok(Some(Opened { file, size, content_type: record.content_type, filename: record.filename }))
    }

    /// Local media with content, waiting up to `timeout` for a pending async upload.
    async fn wait_for_upload(&self, server: &str, media_id: &str, timeout: Duration) -> Result<MediaRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.uploaded.notified();
            let record = self.storage.media(server, media_id)?.ok_or_else(|| Error::not_found("Media not found"))?;
            if !record.pending {
                return Ok(record);
            }
            if record.unused_expires_at.is_some_and(|at| at < now_ms()) {
                return Err(Error::not_found("Media not found"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(ErrorKind::NotYetUploaded, "Media has not been uploaded yet"));
            }
        }
    }

    async fn cached(&self, server: &str, media_id: &str) -> Result<Option<Content>> {
        match self.storage.media(server, media_id)? {
            Some(record) if !record.pending => match self.read(server, media_id, record).await {
                Ok(content) => Ok(Some(content)),
                // The file went (removed by hand): fetch it again.
                Err(e) if e.kind() == Some(&ErrorKind::NotFound) => Ok(None),
                Err(e) => Err(e),
            },
            _ => Ok(None),
        }
    }

    async fn read(&self, server: &str, media_id: &str, record: MediaRecord) -> Result<Content> {
        let bytes = self.files.read(&self.files.original(server, media_id)).await?.ok_or_else(|| {
            tracing::warn!(server, media_id, "media file missing");
            Error::not_found("Media not found")
        })?;
        Ok(Content { bytes, content_type: record.content_type, filename: record.filename })
    }

    /// A thumbnail at least `width`×`height` where the image allows; the original when it is no
    /// larger. Generated once per size and method, then served from the cache.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        (width, height, method): (u32, u32, Method),
        fetch: Fetch,
    ) -> Result<Content> {
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("`width` and `height` must be positive"));
        }
        let (width, height) = (width.min(MAX_THUMBNAIL_SIDE), height.min(MAX_THUMBNAIL_SIDE));
        let original = self.download(server, media_id, fetch).await?;
        let essence = original.content_type.as_deref().map(essence).unwrap_or_default();
        if !thumbnail::supported(&essence) {
            return Err(Error::new(
                ErrorKind::Unknown,
                "Cannot find any thumbnails for the requested media: it is not a PNG, JPEG, GIF or WebP image",
            ));
        }
        let server = server.as_str();
        let key = (width, height, method.as_str());
        if let Some(content) = self.cached_thumbnail(server, media_id, key).await? {
            return Ok(content);
        }
        let _busy = self.busy.lock(&(server.to_owned(), media_id.to_owned())).await;
        if let Some(content) = self.cached_thumbnail(server, media_id, key).await? {
            return Ok(content);
        }
        let _decoding = self.decoding.acquire().await.map_err(|_| Error::internal("decoder semaphore closed"))?;
        let max_pixels = self.config.media.max_thumbnail_pixels;
        let bytes = original.bytes;
        let (generated, bytes) = tokio::task::spawn_blocking(move || {
            (thumbnail::generate(&bytes, width, height, method, max_pixels), bytes)
        })
        .await
        .map_err(|e| Error::internal(format!("thumbnail task: {e}")))?;
        let Some(generated) = generated? else {
            return Ok(Content { bytes, content_type: original.content_type, filename: original.filename });
        };
        let path = self.files.thumbnail(server, media_id, width, height, method.as_str());
        self.files.write(&generated.bytes, &path).await?;
        let record =
            ThumbnailRecord { content_type: generated.content_type.to_owned(), size: generated.bytes.len() as u64 };
        let mut batch = Batch::new();
        batch.put_media_thumbnail(server, media_id, key, &record);
        self.storage.commit(batch).await?;
        Ok(Content { bytes: generated.bytes, content_type: Some(record.content_type), filename: None })
    }
}

impl Media {
    async fn cached_thumbnail(
        &self,
        server: &str,
        media_id: &str,
        (width, height, method): (u32, u32, &str),
    ) -> Result<Option<Content>> {
        let Some(record) = self.storage.media_thumbnail(server, media_id, width, height, method)? else {
            return Ok(None);
        };
        let path = self.files.thumbnail(server, media_id, width, height, method);
        Ok(self.files.read(&path).await?.map(|bytes| Content {
            bytes,
            content_type: Some(record.content_type),
            filename: None,
        }))
    }
}

/// The spec's media ID grammar: `[A-Za-z0-9_-]+` (nothing else may reach a key or a request).
pub fn validate_media_id(media_id: &str) -> Result<()> {
    let valid = !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid { Ok(()) } else { Err(Error::not_found("Media not found: malformed media ID")) }
}

/// A content type's `type/subtype`, lower-cased, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}
