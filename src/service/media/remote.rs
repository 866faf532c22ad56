//! Fetching media from other servers: the authenticated federation endpoint
//! (`/_matrix/federation/v1/media/download`, a `multipart/mixed` answer), falling back to the
//! legacy unauthenticated `/_matrix/media/v3/download` for servers that predate it.

use http::{HeaderMap, header};
use ruma::ServerName;

use crate::{
    error::{Error, ErrorKind, Result},
    service::federation::client::{FederationClient, Signing},
};

/// What another server sent for one media ID.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// Multipart framing and headers on top of the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

pub async fn fetch(client: &FederationClient, server: &ServerName, media_id: &str, limit: u64) -> Result<Fetched> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let path = format!("/_matrix/federation/v1/media/download/{media_id}");
    match client.get_bytes(server, &path, Signing::Signed, limit.saturating_add(MULTIPART_OVERHEAD)).await {
        Ok((headers, body)) => from_multipart(server, &headers, &body, limit),
        // An answer that is not "no such media" (as an older server's unknown endpoint is): try
        // the legacy endpoint.
        Err(Error::Remote(e)) if e.status.is_some() && e.errcode.as_deref() != Some("M_NOT_FOUND") => {
            tracing::debug!(%server, media_id, error = %e, "federation media endpoint failed, trying the legacy one");
            let path = format!("/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false");
            let (headers, bytes) = client.get_bytes(server, &path, Signing::Unsigned, limit).await?;
            Ok(Fetched {
                bytes,
                content_type: header_str(&headers, header::CONTENT_TYPE),
                filename: header_str(&headers, header::CONTENT_DISPOSITION).and_then(|v| disposition_filename(&v)),
            })
        }
        Err(e) => Err(e),
    }
}

fn from_multipart(server: &ServerName, headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Fetched> {
    let bad = |why: &str| Error::unreachable(server, format!("bad multipart media answer: {why}"));
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or_default();
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|param| param.trim().split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .ok_or_else(|| bad("no boundary"))?;
    let parts = multipart_parts(body, &boundary).ok_or_else(|| bad("malformed"))?;
    let (part_headers, bytes) = parts.into_iter().nth(1).ok_or_else(|| bad("no second part"))?;
    let get = |name: &str| part_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    if get("location").is_some() {
        return Err(bad("redirects to a URL are not followed"));
    }
    if bytes.len() > limit {
        return Err(Error::new(ErrorKind::RemoteTooLarge, format!("{server}'s file is larger than {limit} bytes")));
    }
    Ok(Fetched {
        bytes: bytes.to_vec(),
        content_type: get("content-type"),
        filename: get("content-disposition").and_then(|v| disposition_filename(&v)),
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

type Part<'a> = (Vec<(String, String)>, &'a [u8]);

/// Splits a `multipart/*` body (RFC 2046) into its parts' headers and contents.
pub fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes())?;
    let mut rest = &body[start + delimiter.len()..];
    let next_delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        // Transport padding, then the line break that ends the delimiter line.
        let line_end = find(rest, b"\r\n")?;
        rest = &rest[line_end + 2..];
        let end = find(rest, next_delimiter.as_bytes())?;
        let part = &rest[..end];
        rest = &rest[end + next_delimiter.len()..];
        let (head, content) = if let Some(content) = part.strip_prefix(b"\r\n") {
            (&b""[..], content)
        } else {
            let split = find(part, b"\r\n\r\n")?;
            (&part[..split], &part[split + 4..])
        };
        let headers = std::str::from_utf8(head)
            .ok()?
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        parts.push((headers, content));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The file name of a `Content-Disposition` value: `filename*=utf-8''…` (RFC 6266/5987) first,
/// then `filename="…"` or `filename=…`.
pub fn disposition_filename(value: &str) -> Option<String> {
    let params: Vec<(String, &str)> = split_params(value)
        .into_iter()
        .skip(1)
        .filter_map(|param| param.trim().split_once('='))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    if let Some((_, value)) = params.iter().find(|(name, _)| name == "filename*") {
        let (charset, rest) = value.split_once('\'')?;
        let (_language, encoded) = rest.split_once('\'')?;
        if charset.eq_ignore_ascii_case("utf-8") {
            return percent_decode(encoded);
        }
    }
    let (_, value) = params.iter().find(|(name, _)| name == "filename")?;
    let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\")).filter(|name| !name.is_empty())
}

/// Splits at `;` outside double quotes.
fn split_params(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split_into_parts() {
        let body = b"--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nContent-Type: text/plain\r\nContent-Disposition: inline; filename*=utf-8''%E2%98%95\r\n\r\nhello\r\n\r\n--xyz--\r\n";
        let parts = multipart_parts(body, "xyz").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, b"{}");
        assert_eq!(parts[1].1, b"hello\r\n");
        assert_eq!(parts[1].0[0], ("Content-Type".to_owned(), "text/plain".to_owned()));
        assert_eq!(disposition_filename(&parts[1].0[1].1).as_deref(), Some("\u{2615}"));
        assert!(multipart_parts(b"--xyz\r\nno end", "xyz").is_none());
    }

    #[test]
    fn disposition_file_names() {
        assert_eq!(disposition_filename("attachment; filename=\"a;b.txt\"").as_deref(), Some("a;b.txt"));
        assert_eq!(disposition_filename("inline; filename=plain.png").as_deref(), Some("plain.png"));
        assert_eq!(disposition_filename("inline"), None);
    }
}
