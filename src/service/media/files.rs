//! Media bytes on disk. A file is written to a temporary name, fsynced, then renamed into place
//! (and the directory fsynced), so a file under its final name is always whole. Names are the
//! SHA-256 of `server/media_id`: nothing a client sends ever becomes part of a path.

use std::{
    io::ErrorKind as IoErrorKind,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    error::{Error, ErrorKind, Result},
    service::secrets,
};

pub struct Files {
    root: PathBuf,
}

/// A file being written under a temporary name; removed if dropped before [`Files::persist`].
pub struct Staged {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    pub size: u64,
    limit: u64,
    persisted: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Staged {
    /// Appends a chunk; past the limit it is `413 M_TOO_LARGE` (and the file goes on drop).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(Error::new(ErrorKind::TooLarge, format!("The file exceeds the limit of {} bytes", self.limit)));
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().expect("open until persisted");
        file.write_all(chunk).await.map_err(io_error)
    }

    /// Hex SHA-256 of what was written.
    pub fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl Files {
    /// Opens (creating) the media directory and clears temporary files left by a crash.
    pub fn open(root: PathBuf) -> Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_error)?;
        }
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::internal(format!("cannot create the media directory {}: {e}", root.display())))?;
        Ok(Self { root })
    }

    /// Starts a new file of at most `limit` bytes.
    pub async fn stage(&self, limit: u64) -> Result<Staged> {
        let path = self.root.join("tmp").join(secrets::random_string(24));
        let file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        Ok(Staged { path, file: Some(file), hasher: Sha256::new(), size: 0, limit, persisted: false })
    }

    /// Makes a staged file durable under its final name.
    pub async fn persist(&self, mut staged: Staged, destination: &Path) -> Result<()> {
        let file = staged.file.take().expect("open until persisted");
        file.sync_all().await.map_err(io_error)?;
        drop(file);
        let directory = destination.parent().expect("media paths have a parent").to_owned();
        tokio::fs::create_dir_all(&directory).await.map_err(io_error)?;
        tokio::fs::rename(&staged.path, destination).await.map_err(io_error)?;
        staged.persisted = true;
        // The rename is durable once the directory is.
        tokio::task::spawn_blocking(move || std::fs::File::open(&directory).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| Error::internal(format!("media directory sync: {e}")))?
            .map_err(io_error)
    }

    /// Writes `bytes` durably to `destination`.
    pub async fn write(&self, bytes: &[u8], destination: &Path) -> Result<()> {
        let mut staged = self.stage(u64::MAX).await?;
        staged.write(bytes).await?;
        self.persist(staged, destination).await
    }

    /// The content of a file, or `None` if it is not there.
    pub async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// A file opened for reading, with its size, or `None` if it is not there.
    pub async fn open_file(&self, path: &Path) -> Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let size = file.metadata().await.map_err(io_error)?.len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == IoErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The file of some media's content.
    pub fn original(&self, server: &str, media_id: &str) -> PathBuf {
        let name = file_name(server, media_id);
        self.root.join(&name[..2]).join(name)
    }

    /// The file of one thumbnail.
    pub fn thumbnail(&self, server: &str, media_id: &str, width: u32, height: u32, method: &str) -> PathBuf {
        let name = file_name(server, media_id);
        self.root.join("thumbnails").join(&name[..2]).join(format!("{name}-{width}x{height}-{method}"))
    }
}

fn file_name(server: &str, media_id: &str) -> String {
    hex::encode(Sha256::digest(format!("{server}/{media_id}").as_bytes()))
}

fn io_error(e: std::io::Error) -> Error {
    Error::internal(format!("media file: {e}"))
}
