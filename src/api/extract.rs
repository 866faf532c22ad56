//! Request extractors that fail with Matrix errors instead of axum's plain-text rejections.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::{
    error::{Error, ErrorKind},
    service::{
        Services,
        accounts::{ClientInfo, Session},
    },
};

/// A JSON request body. Unparseable JSON is `M_NOT_JSON`; JSON of the wrong shape is `M_BAD_JSON`;
/// a body over the size limit is `M_TOO_LARGE`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be left out: an empty body reads as `T::default()` (`{}`), for endpoints
/// that clients often call without one (`/logout`, `DELETE /devices/{id}`).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(ErrorKind::TooLarge, "Request body too large")
        } else {
            Error::new(ErrorKind::Unknown, format!("Could not read the request body: {rejection}"))
        }
    })
}

/// Reads typed fields out of a body already parsed as an object (`M_BAD_JSON` if they do not fit).
/// Handlers that pass the raw body on, as user-interactive authentication needs, use this.
pub fn fields<T: DeserializeOwned>(body: &serde_json::Map<String, serde_json::Value>) -> Result<T, Error> {
    T::deserialize(body).map_err(|e| Error::bad_json(format!("Malformed request body: {e}")))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => Error::bad_json(format!("Malformed request body: {e}")),
        Category::Syntax | Category::Eof | Category::Io => {
            Error::new(ErrorKind::NotJson, format!("Request body is not valid JSON: {e}"))
        }
    })
}

/// Path parameters; a malformed one is `M_INVALID_PARAM`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| Error::invalid_param(rejection.body_text()))
    }
}

/// Query parameters; a missing one is `M_MISSING_PARAM`, a malformed one `M_INVALID_PARAM`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query).map(Query).map_err(|e| {
            let message = format!("Bad query parameters: {e}");
            if e.to_string().starts_with("missing field") {
                Error::missing_param(message)
            } else {
                Error::invalid_param(message)
            }
        })
    }
}

/// The authenticated user of a request, refusing guests (`M_GUEST_ACCESS_FORBIDDEN`).
pub struct Auth(pub Session);

/// The authenticated user of a request, guests included.
pub struct GuestAuth(pub Session);

impl FromRequestParts<Arc<Services>> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Error> {
        let session = authenticate(parts, services)?;
        if session.is_guest {
            return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest accounts cannot do this"));
        }
        Ok(Auth(session))
    }
}

impl FromRequestParts<Arc<Services>> for GuestAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Error> {
        authenticate(parts, services).map(GuestAuth)
    }
}

/// An access token from `Authorization: Bearer` or the deprecated `access_token` query parameter.
fn access_token(parts: &Parts) -> Result<Option<&str>, Error> {
    let header = match parts.headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
            Some(token.ok_or_else(|| {
                Error::new(ErrorKind::MissingToken, "The Authorization header must be `Bearer <token>`")
            })?)
        }
        None => None,
    };
    let query = parts.uri.query().and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("access_token=")));
    match (header, query) {
        (Some(_), Some(_)) => Err(Error::new(
            ErrorKind::MissingToken,
            "Give the access token in the Authorization header or the query string, not both",
        )),
        (Some(token), None) => Ok(Some(token)),
        (None, query) => Ok(query),
    }
}

fn authenticate(parts: &Parts, services: &Services) -> Result<Session, Error> {
    let token = access_token(parts)?.ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))?;
    // A token from the query string may be percent-encoded; ours never contain such characters.
    let token = percent_decode(token);
    if let Some(appservice) = services.appservices.by_token(&token) {
        let asserted = query_param(parts, "user_id");
        let session = services.appservices.session(appservice, asserted.as_deref())?;
        tracing::Span::current().record("user", session.user_id.as_str());
        return Ok(session);
    }
    let session = services.accounts.authenticate(&token, &client_info(parts))?;
    tracing::Span::current().record("user", session.user_id.as_str());
    Ok(session)
}

/// The application service whose `as_token` a request bears, if any (for `/register`, which takes
/// no access token otherwise).
pub struct AppServiceToken(pub Option<Arc<crate::service::appservice::AppService>>);

impl FromRequestParts<Arc<Services>> for AppServiceToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Error> {
        Ok(AppServiceToken(appservice_token(parts, services).cloned()))
    }
}

/// One query parameter, decoded (an application service asserts its user with `user_id`).
fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(parts.uri.query()?).ok()?;
    pairs.into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

/// The `as_token` of a request, if it bears one of an application service.
fn appservice_token<'a>(
    parts: &Parts,
    services: &'a Services,
) -> Option<&'a Arc<crate::service::appservice::AppService>> {
    let token = access_token(parts).ok()??;
    services.appservices.by_token(&percent_decode(token))
}

fn percent_decode(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('%') || value.contains('+') {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("t={value}"))
            .ok()
            .and_then(|mut pairs| pairs.pop())
            .map_or(value.into(), |(_, decoded)| decoded.into())
    } else {
        value.into()
    }
}

/// The client's address and user agent.
pub fn client_info(parts: &Parts) -> ClientInfo {
    ClientInfo {
        ip: client_ip(parts),
        user_agent: parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
    }
}

fn client_ip(parts: &Parts) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The client's IP address as a key for rate limits.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        Ok(ClientIp(client_ip(parts).unwrap_or_default()))
    }
}

/// Method and path of the request, naming the operation a UIA session is bound to.
pub struct Operation(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Operation {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        Ok(Operation(format!("{} {}", parts.method, parts.uri.path())))
    }
}
