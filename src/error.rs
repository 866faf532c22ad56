//! The one error type of the server. Each refusal carries the Matrix `errcode` and HTTP status the
//! spec gives it; the API layer turns it into a response (`api::error`), so services stay free of
//! HTTP types.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A refusal the client is meant to see.
    #[error("{kind:?}: {message}")]
    Matrix { kind: ErrorKind, message: Cow<'static, str> },
    /// User-interactive authentication is not finished: a 401 with the flows to follow.
    #[error("user-interactive authentication required")]
    Uia(Box<UiaChallenge>),
    /// The database failed; the client sees a generic 500, the log sees the cause.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Any other failure inside the server.
    #[error("internal: {0}")]
    Internal(Cow<'static, str>),
    /// A request to another homeserver failed: no answer, or an error answer. Handlers that call
    /// out decide what their client sees; left alone it is a 502.
    #[error("{0}")]
    Remote(Box<RemoteError>),
}

/// What went wrong talking to another server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request to {destination} failed: {message}")]
pub struct RemoteError {
    pub destination: String,
    /// The HTTP status of its answer; `None` when none came (DNS, refused address, TLS, timeout).
    pub status: Option<u16>,
    /// The Matrix `errcode` of its answer, if it sent one.
    pub errcode: Option<String>,
    pub message: String,
}

/// The Matrix error codes this server uses, each with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BadJson,
    NotJson,
    NotFound,
    Forbidden,
    MissingToken,
    UnknownToken {
        soft_logout: bool,
    },
    Unrecognized,
    MethodNotAllowed,
    /// A user-interactive authentication stage this endpoint does not offer (400, as Synapse).
    UnknownAuthType,
    LimitExceeded {
        retry_after_ms: u64,
    },
    TooLarge,
    MissingParam,
    InvalidParam,
    InvalidUsername,
    UserInUse,
    UserDeactivated,
    Exclusive,
    GuestAccessForbidden,
    Unauthorized,
    ThreepidNotFound,
    ThreepidDenied,
    ProfileTooLarge,
    KeyTooLarge,
    /// Writing something only the server may write (`M_BAD_JSON` with 405, as the spec says).
    ManagedByServer,
    UnsupportedRoomVersion,
    RoomInUse,
    InvalidRoomState,
    BadAlias,
    /// The state does not allow this, e.g. unbanning someone not banned.
    BadState,
    /// A room alias that already exists (409).
    AliasInUse,
    /// The room's version is not one the asking server supports (`make_join` and the like);
    /// the body names the room's version.
    IncompatibleRoomVersion {
        room_version: String,
    },
    /// A key's signature does not check out (as Synapse says it).
    InvalidSignature,
    /// Room keys for a backup version that is not the current one (403).
    WrongRoomKeysVersion {
        current_version: Option<String>,
    },
    /// An async upload to a media ID that already has content (409).
    CannotOverwriteMedia,
    /// Media created for an async upload whose content has not come yet (504).
    NotYetUploaded,
    /// Another server's file is larger than we fetch (`M_TOO_LARGE` with 502, as the spec says).
    RemoteTooLarge,
    /// A bad request that no more specific code describes.
    Unknown,
}

impl ErrorKind {
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::BadJson | Self::ManagedByServer => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::Forbidden => "M_FORBIDDEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::Unrecognized | Self::MethodNotAllowed | Self::UnknownAuthType => "M_UNRECOGNIZED",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::TooLarge | Self::RemoteTooLarge => "M_TOO_LARGE",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::UserInUse => "M_USER_IN_USE",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::ThreepidNotFound => "M_THREEPID_NOT_FOUND",
            Self::ThreepidDenied => "M_THREEPID_DENIED",
            Self::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            Self::KeyTooLarge => "M_KEY_TOO_LARGE",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::InvalidRoomState => "M_INVALID_ROOM_STATE",
            Self::BadAlias => "M_BAD_ALIAS",
            Self::BadState => "M_BAD_STATE",
            Self::IncompatibleRoomVersion { .. } => "M_INCOMPATIBLE_ROOM_VERSION",
            Self::InvalidSignature => "M_INVALID_SIGNATURE",
            Self::WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::Unknown | Self::AliasInUse => "M_UNKNOWN",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::MissingToken | Self::UnknownToken { .. } | Self::Unauthorized => 401,
            Self::Forbidden
            | Self::UserDeactivated
            | Self::GuestAccessForbidden
            | Self::ThreepidDenied
            | Self::BadState
            | Self::WrongRoomKeysVersion { .. } => 403,
            Self::NotFound | Self::Unrecognized | Self::ThreepidNotFound => 404,
            Self::MethodNotAllowed | Self::ManagedByServer => 405,
            Self::TooLarge => 413,
            Self::AliasInUse | Self::CannotOverwriteMedia => 409,
            Self::NotYetUploaded => 504,
            Self::RemoteTooLarge => 502,
            Self::LimitExceeded { .. } => 429,
            Self::BadJson
            | Self::NotJson
            | Self::MissingParam
            | Self::InvalidParam
            | Self::InvalidUsername
            | Self::UserInUse
            | Self::Exclusive
            | Self::ProfileTooLarge
            | Self::KeyTooLarge
            | Self::UnknownAuthType
            | Self::UnsupportedRoomVersion
            | Self::RoomInUse
            | Self::InvalidRoomState
            | Self::BadAlias
            | Self::IncompatibleRoomVersion { .. }
            | Self::InvalidSignature
            | Self::Unknown => 400,
        }
    }

    /// Fields the spec adds to the error body for this code.
    pub fn extra_fields(&self, body: &mut Map<String, Value>) {
        match self {
            Self::UnknownToken { soft_logout: true } => {
                body.insert("soft_logout".into(), Value::Bool(true));
            }
            Self::LimitExceeded { retry_after_ms } => {
                body.insert("retry_after_ms".into(), (*retry_after_ms).into());
            }
            Self::IncompatibleRoomVersion { room_version } => {
                body.insert("room_version".into(), room_version.clone().into());
            }
            Self::WrongRoomKeysVersion { current_version } => {
                body.insert("current_version".into(), current_version.clone().into());
            }
            _ => {}
        }
    }
}

/// The body of a 401 that asks the client to continue user-interactive authentication.
#[derive(Debug, Clone)]
pub struct UiaChallenge {
    pub flows: Vec<Vec<&'static str>>,
    pub completed: Vec<&'static str>,
    pub session: String,
    pub params: Map<String, Value>,
    /// Set when the last attempt at a stage failed.
    pub error: Option<(ErrorKind, Cow<'static, str>)>,
}

impl UiaChallenge {
    pub fn to_json(&self) -> Value {
        let flows: Vec<Value> = self.flows.iter().map(|stages| serde_json::json!({ "stages": stages })).collect();
        let mut body = serde_json::json!({
            "flows": flows,
            "params": self.params,
            "session": self.session,
        });
        let object = body.as_object_mut().expect("built as an object");
        if !self.completed.is_empty() {
            object.insert("completed".into(), serde_json::json!(self.completed));
        }
        if let Some((kind, message)) = &self.error {
            object.insert("errcode".into(), kind.errcode().into());
            object.insert("error".into(), Value::String(message.to_string()));
        }
        body
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Matrix { kind, message: message.into() }
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Internal(message.into())
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// A failed request to `destination` that got no answer.
    pub fn unreachable(destination: impl ToString, message: impl ToString) -> Self {
        Self::Remote(Box::new(RemoteError {
            destination: destination.to_string(),
            status: None,
            errcode: None,
            message: message.to_string(),
        }))
    }

    /// The errcode kind, if this is a Matrix refusal.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix { kind, .. } => Some(kind),
            _ => None,
        }
    }
}
