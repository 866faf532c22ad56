//! The WebSocket transport (`docs/websocket.md`): `/sync` updates pushed as they happen, and a few
//! requests (`ping`, `send`, `state`, `typing`, `read_markers`) answered on the same socket.
//!
//! One task per socket. It subscribes to the user's wake-ups before building each update, so
//! nothing is missed, and sends an update only when there is something in it. Writes are awaited:
//! updates coalesce while the client reads, and a client that stops reading for `WRITE_TIMEOUT`
//! is closed with a reason instead of being buffered for without bound.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
            rejection::WebSocketUpgradeRejection,
        },
    },
    response::Response,
};
use ruma::{OwnedEventId, OwnedRoomId, events::TimelineEventType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::extract::{ClientIp, GuestAuth, Query},
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        accounts::Session,
        presence,
        rate_limit::Limit,
        rooms::{EventDraft, Transaction, canonical_content},
        sync::{self, SyncRequest, SyncToken},
    },
};

/// A client that does not take a message within this long is too slow and is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings (and keeps the user present).
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// How long closing (the close frame, the client's answer) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request a client may send.
const MAX_REQUEST_BYTES: usize = 128 * 1024;

#[derive(Deserialize, Default)]
pub struct StreamQuery {
    since: Option<String>,
    filter: Option<String>,
    set_presence: Option<String>,
}

/// `GET /_matrix/client/unstable/io.myelin.websocket/stream`. Authentication and parameters are
/// checked before upgrading, so failures are plain HTTP answers.
pub async fn stream(
    State(services): State<Arc<Services>>,
    GuestAuth(session): GuestAuth,
    ClientIp(ip): ClientIp,
    Query(query): Query<StreamQuery>,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let upgrade = upgrade.map_err(|e| Error::new(ErrorKind::Unrecognized, format!("Not a WebSocket upgrade: {e}")))?;
    let set_presence = match query.set_presence.as_deref() {
        None => None,
        Some(text) => {
            Some(presence::State::parse(text).ok_or_else(|| Error::invalid_param(format!("Unknown presence {text}")))?)
        }
    };
    let request = SyncRequest {
        since: query.since.as_deref().map(SyncToken::parse).transpose()?,
        filter: services.filters.resolve(&session.user_id, query.filter.as_deref())?,
        full_state: false,
        timeout: Duration::ZERO,
        set_presence,
    };
    Ok(upgrade
        .protocols(["m.json"])
        .max_message_size(MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| serve(services, session, ip, request, socket)))
}

async fn serve(services: Arc<Services>, session: Session, ip: String, mut request: SyncRequest, mut socket: WebSocket) {
    tracing::debug!(user = %session.user_id, "websocket opened");
    let mut shutdown = services.shutdown.subscribe();
    let mut pings = tokio::time::interval(PING_INTERVAL);
    let mut first = true;
    let (_syncing, changed) = services.presence.open_sync(&session.user_id, request.set_presence);
    if changed {
        services.notify_peers(&session.user_id);
    }
    loop {
        let mut wake = services.notifier.subscribe(&session.user_id);
        wake.borrow_and_update();
        match sync::build(&services, &session, &request).await {
            Ok((update, has_updates)) => {
                if has_updates || first {
                    request.since = update["next_batch"].as_str().and_then(|t| SyncToken::parse(t).ok());
                    if let Err(reason) = send(&mut socket, &update).await {
                        return close(socket, close_code::POLICY, reason).await;
                    }
                }
                first = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "building a websocket update failed");
                return close(socket, close_code::ERROR, "Internal server error").await;
            }
        }
        // Wait for something to send or to answer.
        loop {
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() { return close(socket, close_code::AWAY, "Server shutting down").await; }
                    break;
                }
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let answer = answer(&services, &session, &ip, &text).await;
                        if let Err(reason) = send(&mut socket, &answer).await {
                            return close(socket, close_code::POLICY, reason).await;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        return close(socket, close_code::UNSUPPORTED, "Only text (JSON) messages are understood").await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // The reply to the client's Close frame goes out on the next read; without it
                        // the client sees the connection drop (1006) instead of a clean close.
                        tracing::debug!(user = %session.user_id, "websocket closed by the client");
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
                        return;
                    }
                    None | Some(Err(_)) => {
                        tracing::debug!(user = %session.user_id, "websocket connection lost");
                        return;
                    }
                },
                _ = pings.tick() => {
                    if services.presence.on_sync(&session.user_id, request.set_presence) {
                        services.notify_peers(&session.user_id);
                    }
                    if tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Ping(Default::default()))).await.is_err() {
                        return close(socket, close_code::POLICY, "Too slow: the client does not read").await;
                    }
                }
                _ = shutdown.changed() => return close(socket, close_code::AWAY, "Server shutting down").await,
            }
        }
    }
}

/// Sends one JSON message, giving up on a client that does not read.
async fn send(socket: &mut WebSocket, message: &Value) -> std::result::Result<(), &'static str> {
    let text = Message::Text(Utf8Bytes::from(message.to_string()));
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("Connection lost"),
        Err(_) => Err("Too slow: the client does not read its updates"),
    }
}

/// Sends the close frame, then reads until the client answers with its own (RFC 6455 §7.1.1):
/// dropping the connection with input unread (a pong, a request in flight) would reset it, and the
/// client would lose what was still queued for it, the close frame included.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    tracing::debug!(code, reason, "closing websocket");
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let handshake = async {
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(message) = socket.recv().await {
            if let Message::Close(_) = message? {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

#[derive(Deserialize)]
struct Request {
    id: String,
    method: String,
    #[serde(default, alias = "param")]
    params: Map<String, Value>,
}

/// The answer to one client request: `{"id", "result"}` or `{"id", "error"}`.
async fn answer(services: &Arc<Services>, session: &Session, ip: &str, text: &str) -> Value {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) => {
            let id = serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("id").cloned()).unwrap_or(Value::Null);
            return json!({ "id": id, "error": { "errcode": "M_BAD_JSON", "error": format!("Not a request: {e}") } });
        }
    };
    match perform(services, session, ip, &request).await {
        Ok(result) => json!({ "id": request.id, "result": result }),
        Err(error) => json!({ "id": request.id, "error": error_body(&error) }),
    }
}

fn error_body(error: &Error) -> Value {
    match error {
        Error::Matrix { kind, message } => json!({ "errcode": kind.errcode(), "error": message }),
        _ => json!({ "errcode": ErrorKind::Unknown.errcode(), "error": "Internal server error" }),
    }
}

fn param<T: serde::de::DeserializeOwned>(params: &Map<String, Value>, name: &str) -> Result<T> {
    let value = params.get(name).ok_or_else(|| Error::missing_param(format!("Missing parameter: {name}")))?;
    T::deserialize(value).map_err(|e| Error::bad_json(format!("Invalid parameter {name}: {e}")))
}

async fn perform(services: &Arc<Services>, session: &Session, ip: &str, request: &Request) -> Result<Value> {
    let params = &request.params;
    let user = &session.user_id;
    match request.method.as_str() {
        "ping" => Ok(json!({})),
        "send" => {
            let room_id: OwnedRoomId = param(params, "room_id")?;
            let kind: String = param(params, "event_type")?;
            let content: Map<String, Value> = param(params, "content")?;
            // The request ID is the transaction ID, scoped like `PUT /send`'s.
            let txn = Transaction {
                device_id: session.device_id.clone(),
                txn_id: request.id.clone(),
                scope: format!("send/{room_id}/{kind}"),
            };
            services.rate_limits.check_user(Limit::Message, user, ip)?;
            let draft = EventDraft::new(TimelineEventType::from(kind.as_str()), canonical_content(content)?);
            let appended = services.rooms.send(&room_id, user, draft, Some(txn)).await?;
            services.mark_active(user);
            Ok(json!({ "event_id": appended.pdu.event_id }))
        }
        "state" => {
            let room_id: OwnedRoomId = param(params, "room_id")?;
            let kind: String = param(params, "event_type")?;
            let state_key: String = param(params, "state_key")?;
            let content: Map<String, Value> = param(params, "content")?;
            services.rate_limits.check_user(Limit::Message, user, ip)?;
            let event_id = services.rooms.send_state(&room_id, user, &kind, &state_key, content).await?;
            Ok(json!({ "event_id": event_id }))
        }
        "typing" => {
            let room_id: OwnedRoomId = param(params, "room_id")?;
            let typing: bool = param(params, "typing")?;
            let timeout: u64 = params.get("timeout").and_then(Value::as_u64).unwrap_or(30_000);
            super::ephemeral::set_typing(services, &room_id, user, typing, Duration::from_millis(timeout))?;
            Ok(json!({}))
        }
        "read_markers" => {
            let room_id: OwnedRoomId = param(params, "room_id")?;
            let marker = |name: &str| -> Result<Option<OwnedEventId>> {
                params
                    .get(name)
                    .map(|v| OwnedEventId::deserialize(v).map_err(|e| Error::bad_json(format!("{name}: {e}"))))
                    .transpose()
            };
            super::ephemeral::set_read_markers(
                services,
                &room_id,
                user,
                marker("m.fully_read")?,
                marker("m.read")?,
                marker("m.read.private")?,
            )
            .await?;
            Ok(json!({}))
        }
        other => Err(Error::new(ErrorKind::Unrecognized, format!("Unknown method {other}"))),
    }
}
