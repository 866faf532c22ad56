//! Media metadata: local uploads, cached remote files, generated thumbnails. The bytes themselves
//! are files under `media.path` (see `service::media::files`); only their description lives here.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::{Batch, Column, Storage, StorageError, key};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaRecord {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// Bytes; 0 while an async upload waits for its content.
    pub size: u64,
    /// The local user who uploaded (or created) it; `None` for remote media.
    pub uploader: Option<OwnedUserId>,
    /// When it was uploaded, created, or (remote media) cached, in milliseconds.
    pub created_ts: u64,
    /// Hex SHA-256 of the content, once there is content.
    pub sha256: Option<String>,
    /// An async upload (`/create`) whose content has not come yet.
    #[serde(default)]
    pub pending: bool,
    /// Until when a pending upload may still be completed, in milliseconds.
    #[serde(default)]
    pub unused_expires_at: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    pub content_type: String,
    pub size: u64,
}

impl Storage {
    pub fn media(&self, server: &str, media_id: &str) -> Result<Option<MediaRecord>, StorageError> {
        self.get_json(Column::Media, &key::media(server, media_id))
    }

    pub fn media_thumbnail(
        &self,
        server: &str,
        media_id: &str,
        width: u32,
        height: u32,
        method: &str,
    ) -> Result<Option<ThumbnailRecord>, StorageError> {
        self.get_json(Column::MediaThumbnails, &key::media_thumbnail(server, media_id, width, height, method))
    }
}

impl Batch {
    pub fn put_media(&mut self, server: &str, media_id: &str, record: &MediaRecord) {
        self.put_json(Column::Media, key::media(server, media_id), record);
    }

    pub fn put_media_thumbnail(
        &mut self,
        server: &str,
        media_id: &str,
        (width, height, method): (u32, u32, &str),
        record: &ThumbnailRecord,
    ) {
        self.put_json(Column::MediaThumbnails, key::media_thumbnail(server, media_id, width, height, method), record);
    }
}
