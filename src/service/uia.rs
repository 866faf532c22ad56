//! User-interactive authentication (UIA): the 401 dance that guards registration, device deletion,
//! password changes and deactivation.
//!
//! A session remembers which operation it was started for (so it cannot be spent on another), the
//! user it belongs to, the stages completed so far and, for registration, the first request's
//! body, which a client may leave out when it comes back with the session. Sessions live in memory:
//! they are short and a restart only means starting the dance again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{accounts::Accounts, secrets};
use crate::{
    config::Config,
    error::{Error, ErrorKind, Result, UiaChallenge},
};

/// Open sessions at most; past this, new ones are refused until old ones expire.
const MAX_SESSIONS: usize = 50_000;

/// An authentication stage this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Dummy,
    Password,
    RegistrationToken,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Dummy => "m.login.dummy",
            Stage::Password => "m.login.password",
            Stage::RegistrationToken => "m.login.registration_token",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Stage::Dummy, Stage::Password, Stage::RegistrationToken].into_iter().find(|s| s.name() == name)
    }
}

/// The `auth` object of a request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthDict {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl AuthDict {
    /// Removes and parses the `auth` object of a request body, if there is one.
    pub fn take_from(body: &mut Map<String, Value>) -> Result<Option<Self>> {
        body.remove("auth")
            .map(|auth| serde_json::from_value(auth).map_err(|e| Error::bad_json(format!("Malformed auth: {e}"))))
            .transpose()
    }
}

/// One request that needs user-interactive authentication.
pub struct UiaRequest<'a> {
    /// Method and path: a session is only good for the operation it was started for.
    pub operation: String,
    /// The user making the request, if it carries an access token.
    pub user: Option<&'a UserId>,
    pub flows: Vec<Vec<Stage>>,
    /// The request body without `auth`.
    pub body: Map<String, Value>,
    pub auth: Option<AuthDict>,
    /// Registration only: the username asked for.
    pub registering: Option<String>,
}

struct Session {
    created: Instant,
    operation: String,
    user: Option<OwnedUserId>,
    flows: Vec<Vec<Stage>>,
    completed: Vec<Stage>,
    body: Map<String, Value>,
    registering: Option<String>,
}

pub struct Uia {
    sessions: Mutex<Sessions>,
    lifetime: Duration,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Session>,
    last_sweep: Option<Instant>,
}

impl Sessions {
    /// Drops expired sessions, at most once a minute unless the table is full.
    fn sweep(&mut self, lifetime: Duration) {
        let due = self.last_sweep.is_none_or(|at| at.elapsed() > Duration::from_secs(60));
        if due || self.by_id.len() >= MAX_SESSIONS {
            self.by_id.retain(|_, s| s.created.elapsed() < lifetime);
            self.last_sweep = Some(Instant::now());
        }
    }
}

impl Uia {
    pub fn new(lifetime: Duration) -> Self {
        Self { sessions: Mutex::new(Sessions::default()), lifetime }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().expect("UIA lock")
    }

    /// Runs one round. `Ok` carries the body the operation should use (the first request's body
    /// with this request's fields on top); `Err(Error::Uia)` is the 401 asking for more.
    pub async fn authenticate(
        &self,
        accounts: &Accounts,
        config: &Config,
        request: UiaRequest<'_>,
    ) -> Result<Map<String, Value>> {
        let Some(auth) = request.auth.clone() else {
            return Err(self.challenge(self.start(&request)?, None));
        };
        let session_id = match &auth.session {
            Some(id) => {
                self.check_session(id, &request)?;
                id.clone()
            }
            // Without a session, a registration that already has one pending must continue it.
            None if request.registering.is_some() && self.registration_pending(&request) => {
                return Err(self.challenge(self.start(&request)?, None));
            }
            None => self.start(&request)?,
        };

        if let Some(kind) = &auth.kind {
            let stage = Stage::from_name(kind)
                .filter(|s| request.flows.iter().flatten().any(|offered| offered == s))
                .ok_or_else(|| {
                Error::new(ErrorKind::UnknownAuthType, format!("Unknown authentication type {kind}"))
            })?;
            if !self.is_completed(&session_id, stage) {
                if let Err(failure) = check_stage(stage, &auth, &request, accounts, config).await {
                    return match failure {
                        StageFailure::Retry(kind, message) => {
                            Err(self.challenge(session_id, Some((kind, message.into()))))
                        }
                        StageFailure::Refuse(error) => Err(error),
                    };
                }
                self.complete(&session_id, stage);
            }
        }
        self.finish(session_id, request.body)
    }

    fn start(&self, request: &UiaRequest<'_>) -> Result<String> {
        let mut sessions = self.sessions();
        sessions.sweep(self.lifetime);
        if sessions.by_id.len() >= MAX_SESSIONS {
            return Err(Error::new(
                ErrorKind::LimitExceeded { retry_after_ms: 60_000 },
                "Too many authentication sessions",
            ));
        }
        let id = secrets::random_string(24);
        sessions.by_id.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                operation: request.operation.clone(),
                user: request.user.map(ToOwned::to_owned),
                flows: request.flows.clone(),
                completed: Vec::new(),
                body: request.body.clone(),
                registering: request.registering.clone(),
            },
        );
        Ok(id)
    }

    fn check_session(&self, id: &str, request: &UiaRequest<'_>) -> Result<()> {
        let sessions = self.sessions();
        let session = sessions
            .by_id
            .get(id)
            .filter(|s| s.created.elapsed() < self.lifetime)
            .ok_or_else(|| Error::new(ErrorKind::Unknown, "Unknown or expired authentication session"))?;
        if session.operation != request.operation || session.user.as_deref() != request.user {
            return Err(Error::forbidden("This authentication session belongs to another request"));
        }
        Ok(())
    }

    fn registration_pending(&self, request: &UiaRequest<'_>) -> bool {
        self.sessions().by_id.values().any(|s| {
            s.created.elapsed() < self.lifetime
                && s.registering.is_some()
                && s.registering == request.registering
                && s.operation == request.operation
        })
    }

    fn is_completed(&self, id: &str, stage: Stage) -> bool {
        self.sessions().by_id.get(id).is_some_and(|s| s.completed.contains(&stage))
    }

    fn complete(&self, id: &str, stage: Stage) {
        if let Some(session) = self.sessions().by_id.get_mut(id)
            && !session.completed.contains(&stage)
        {
            session.completed.push(stage);
        }
    }

    /// Ends the session if a flow is complete, merging the remembered body under this one.
    fn finish(&self, id: String, body: Map<String, Value>) -> Result<Map<String, Value>> {
        let mut sessions = self.sessions();
        let done = sessions
            .by_id
            .get(&id)
            .is_some_and(|s| s.flows.iter().any(|flow| flow.iter().all(|stage| s.completed.contains(stage))));
        if !done {
            drop(sessions);
            return Err(self.challenge(id, None));
        }
        let mut merged = sessions.by_id.remove(&id).map(|s| s.body).unwrap_or_default();
        merged.extend(body);
        Ok(merged)
    }

    fn challenge(&self, id: String, error: Option<(ErrorKind, std::borrow::Cow<'static, str>)>) -> Error {
        let (flows, completed) =
            self.sessions().by_id.get(&id).map(|s| (s.flows.clone(), s.completed.clone())).unwrap_or_default();
        Error::Uia(Box::new(UiaChallenge {
            flows: flows.iter().map(|flow| flow.iter().map(|s| s.name()).collect()).collect(),
            completed: completed.iter().map(|s| s.name()).collect(),
            session: id,
            params: Map::new(),
            error,
        }))
    }
}

enum StageFailure {
    /// The stage failed but the client may try again: a 401 with the flows and this error.
    Retry(ErrorKind, &'static str),
    /// The request is refused outright.
    Refuse(Error),
}

async fn check_stage(
    stage: Stage,
    auth: &AuthDict,
    request: &UiaRequest<'_>,
    accounts: &Accounts,
    config: &Config,
) -> Result<(), StageFailure> {
    match stage {
        Stage::Dummy => Ok(()),
        Stage::RegistrationToken => {
            let token = auth.fields.get("token").and_then(Value::as_str);
            if token.is_some_and(|t| config.registration.tokens.iter().any(|known| known == t)) {
                Ok(())
            } else {
                Err(StageFailure::Retry(ErrorKind::Unauthorized, "Invalid registration token"))
            }
        }
        Stage::Password => {
            let Some(password) = auth.fields.get("password").and_then(Value::as_str) else {
                return Err(StageFailure::Refuse(Error::missing_param("Missing password")));
            };
            let claimed = identified_user(&auth.fields)
                .and_then(|input| accounts.user_id_for_login(input))
                .ok_or_else(|| StageFailure::Refuse(Error::forbidden("Unknown user in authentication")))?;
            // Proving to be someone else does not authorize acting as this user.
            if let Some(user) = request.user
                && user != claimed
            {
                return Err(StageFailure::Refuse(Error::forbidden("You can only authenticate as yourself")));
            }
            match accounts.check_password(Some(&claimed), password).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(StageFailure::Retry(ErrorKind::Forbidden, "Invalid password")),
                Err(e) => Err(StageFailure::Refuse(e)),
            }
        }
    }
}

/// The user named by an `identifier` of type `m.id.user`, or by the legacy top-level `user`.
pub fn identified_user(fields: &Map<String, Value>) -> Option<&str> {
    match fields.get("identifier") {
        Some(identifier) if identifier.get("type").and_then(Value::as_str) == Some("m.id.user") => {
            identifier.get("user").and_then(Value::as_str)
        }
        Some(_) => None,
        None => fields.get("user").and_then(Value::as_str),
    }
}
