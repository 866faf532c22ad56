"""Media through matrix-nio's AsyncClient against a real Myelin: upload, download, thumbnail."""

import io
import struct
import zlib

from nio.responses import (
    DownloadError,
    MemoryDownloadResponse,
    RegisterResponse,
    ThumbnailResponse,
    UploadResponse,
)

from conftest import PASSWORD, fresh


def png(width: int, height: int) -> bytes:
    """A plain RGB PNG, written by hand (no imaging library in the venv)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x % 256, y % 256, 128)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:16]
    return struct.unpack(">II", data[16:24])


async def test_upload_download_and_thumbnail(new_client):
    client = new_client()
    assert isinstance(await client.register(fresh(), PASSWORD), RegisterResponse)

    text = "bonjour \u2615".encode()
    uploaded, _ = await client.upload(io.BytesIO(text), content_type="text/plain", filename="caf\u00e9.txt",
                                      filesize=len(text))
    assert isinstance(uploaded, UploadResponse), uploaded
    assert uploaded.content_uri.startswith("mxc://")

    downloaded = await client.download(mxc=uploaded.content_uri)
    assert isinstance(downloaded, MemoryDownloadResponse), downloaded
    assert (downloaded.body, downloaded.content_type, downloaded.filename) == (text, "text/plain", "caf\u00e9.txt")

    image = png(64, 32)
    uploaded, _ = await client.upload(io.BytesIO(image), content_type="image/png", filename="p.png",
                                      filesize=len(image))
    assert isinstance(uploaded, UploadResponse), uploaded
    server, media_id = uploaded.content_uri.removeprefix("mxc://").split("/")
    thumbnail = await client.thumbnail(server, media_id, 16, 16)
    assert isinstance(thumbnail, ThumbnailResponse), thumbnail
    assert thumbnail.content_type == "image/png"
    assert png_size(thumbnail.body) == (16, 8)

    missing = await client.download(mxc=f"mxc://{server}/doesnotexist")
    assert isinstance(missing, DownloadError) and missing.status_code == "M_NOT_FOUND", missing
