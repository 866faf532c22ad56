//! Inbound X-Matrix authentication: the extractors every authenticated federation handler takes.
//!
//! The `Authorization: X-Matrix origin=..,destination=..,key=..,sig=..` header is parsed with
//! ruma; the destination must be us; the origin's key is looked up (and fetched when unknown or
//! expired) through `federation.keys`; the signature must cover the method, the URI as sent (path
//! and query), origin, destination and the JSON body. Any failure is `401 M_UNAUTHORIZED`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, OriginalUri, Request},
    http::request::Parts,
};
use ruma::{
    OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixVerificationError},
    signatures::PublicKeyMap,
};
use serde::de::DeserializeOwned;

use crate::{
    api::extract::parse_json,
    error::{Error, ErrorKind, Result},
    service::{Services, federation::origin_limits::OriginPermit},
};

/// Where [`verify`] leaves the origin's turn ([`OriginPermit`]) so that it lasts as long as the
/// handler: [`hold_origin_permit`] puts one in each request and drops it with the response.
#[derive(Clone, Default)]
pub struct PermitSlot(Arc<std::sync::Mutex<Option<OriginPermit>>>);

/// Middleware of the federation router: gives each request a [`PermitSlot`] and keeps it until
/// the handler has answered.
pub async fn hold_origin_permit(mut request: Request, next: axum::middleware::Next) -> axum::response::Response {
    let slot = PermitSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    drop(slot);
    response
}

/// A verified request from another server, with its JSON body.
#[allow(dead_code)] // For the transaction and membership endpoints to come.
pub struct Signed<T> {
    pub origin: OwnedServerName,
    pub body: T,
}

/// A verified request from another server whose body does not matter (GET and the like).
pub struct Origin(pub OwnedServerName);

impl<T: DeserializeOwned> FromRequest<Arc<Services>> for Signed<T> {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self> {
        let (parts, body) = read(request, services).await?;
        let origin = verify(services, &parts, &body).await?;
        Ok(Signed { origin, body: parse_json(&body)? })
    }
}

impl FromRequest<Arc<Services>> for Origin {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self> {
        let (parts, body) = read(request, services).await?;
        verify(services, &parts, &body).await.map(Origin)
    }
}

async fn read(request: Request, services: &Arc<Services>) -> Result<(Parts, Bytes)> {
    let (parts, body) = request.into_parts();
    let body = Bytes::from_request(Request::from_parts(parts.clone(), body), services).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(ErrorKind::TooLarge, "Request body too large")
        } else {
            Error::new(ErrorKind::Unknown, format!("Could not read the request body: {rejection}"))
        }
    })?;
    Ok((parts, body))
}

/// Checks the X-Matrix signature of a request and returns its origin.
pub async fn verify(services: &Services, parts: &Parts, body: &[u8]) -> Result<OwnedServerName> {
    let unauthorized = |message: String| Error::unauthorized(message);
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("Missing X-Matrix authorization".into()))?
        .to_str()
        .map_err(|_| unauthorized("Malformed X-Matrix authorization".into()))?;
    let header = parse_x_matrix(header).map_err(|e| unauthorized(format!("Malformed X-Matrix authorization: {e}")))?;
    let ours = &services.config.server_name;
    if header.destination.as_ref().is_some_and(|destination| destination != ours) {
        return Err(unauthorized(format!("This request is for another server, not {ours}")));
    }
    // The signed JSON carries the body as JSON: one that is not cannot be checked.
    if !body.is_empty() {
        parse_json::<serde_json::Value>(body)?;
    }
    let key = services
        .federation
        .keys
        .request_key(&header.origin, header.key.as_str())
        .await?
        .ok_or_else(|| unauthorized(format!("Unknown or expired key {} of {}", header.key, header.origin)))?;
    let keys: PublicKeyMap = [(header.origin.to_string(), [(header.key.to_string(), key)].into())].into();
    // The URI as the client sent it: handlers of nested routers see a shortened one.
    let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0);
    let mut request = axum::http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = axum::http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .build()
        .map_err(|e| Error::internal(format!("request URI: {e}")))?;
    header.verify_http_request(&request, ours, &keys).map_err(|e| match e {
        XMatrixVerificationError::DestinationMismatch => unauthorized("Wrong destination".into()),
        e => unauthorized(format!("Bad X-Matrix signature: {e}")),
    })?;
    // A server that talks to us is up: what waits for it goes now.
    services.federation.sender.destination_alive(&header.origin);
    // Only a verified origin takes a turn: a forged one cannot use up another server's.
    if let Some(PermitSlot(slot)) = parts.extensions.get::<PermitSlot>() {
        let permit = services.federation.origin_limits.acquire(&header.origin).await?;
        *slot.lock().expect("permit slot") = Some(permit);
    }
    Ok(header.origin)
}

/// Parses an `X-Matrix` authorization with ruma, first quoting bare values: the spec asks
/// recipients to accept colons in unquoted values, which ruma's RFC 9110 parser refuses, and
/// Synapse sends `origin=name:port` unquoted.
pub fn parse_x_matrix(header: &str) -> std::result::Result<XMatrix, String> {
    XMatrix::parse(header).or_else(|first| {
        let quoted = quote_bare_values(header).ok_or_else(|| first.to_string())?;
        XMatrix::parse(quoted).map_err(|e| e.to_string())
    })
}

/// `X-Matrix a=b:c,d="e"` → `X-Matrix a="b:c",d="e"`; `None` if it is not an X-Matrix header.
fn quote_bare_values(header: &str) -> Option<String> {
    let (scheme, params) = header.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case(XMatrix::AUTH_SCHEME) {
        return None;
    }
    let mut parts = Vec::new();
    let (mut current, mut in_quotes, mut escaped) = (String::new(), false, false);
    for c in params.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let params: Vec<String> = parts
        .iter()
        .map(|part| match part.trim().split_once('=') {
            Some((name, value)) if !value.trim().starts_with('"') => format!("{}=\"{}\"", name.trim(), value.trim()),
            _ => part.trim().to_owned(),
        })
        .collect();
    Some(format!("{scheme} {}", params.join(",")))
}

#[cfg(test)]
mod tests;
