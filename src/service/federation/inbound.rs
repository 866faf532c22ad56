//! Checks performed on receipt of a PDU (server-server API), the network side: format and event
//! ID, signatures and hashes (redacting on a hash mismatch), then whatever the room's checks need
//! that we do not have: the auth chain (`/event_auth`), missing prev events
//! (`/get_missing_events`), and, across a gap, the state before the event (`/state_ids` and
//! `/event`, stored as outliers). The checks against the room (auth events, state before, current
//! state) and the storage are `Rooms::accept_remote`'s.
//!
//! Nothing here recurses without bound: missing prev events are fetched once per received PDU
//! (at most [`MISSING_EVENTS_LIMIT`]), and events still cut off after that get the state before
//! them from the sender instead.

use std::collections::BTreeSet;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UInt,
    UserId,
    api::federation::{
        authorization::get_event_authorization, event::get_event, event::get_missing_events, event::get_room_state_ids,
    },
    room_version_rules::RoomVersionRules,
    signatures::Verified,
};
use serde_json::value::RawValue;

use super::keys::RemoteKeys;
use crate::{
    error::{Error, Result},
    service::{
        Services,
        locks::KeyedLocks,
        rooms::{
            Pdu,
            pdu::{self, Built},
            remote::{Accepted, StateBefore},
        },
    },
    storage::EventStatus,
};

/// Prev events fetched with `/get_missing_events` for one received PDU.
pub const MISSING_EVENTS_LIMIT: u32 = 20;
/// Events fetched at once with `/event`.
const CONCURRENT_FETCHES: usize = 8;

/// Inbound federation state: one transaction per origin at a time (as the spec expects of a
/// sender, and so that a retried transaction waits for the first attempt's result).
#[derive(Default)]
pub struct Inbound {
    pub transactions: KeyedLocks<OwnedServerName>,
}

/// A PDU parsed from JSON: the canonical object, or why it is unusable.
pub fn canonical_object(raw: &RawValue) -> std::result::Result<CanonicalJsonObject, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("not a canonical JSON object: {e}"))
}

/// The room a PDU names (`None` for a v12 create event, which names none).
pub fn room_of(object: &CanonicalJsonObject) -> Option<Result<ruma::OwnedRoomId>> {
    match object.get("room_id")? {
        CanonicalJsonValue::String(id) => {
            Some(RoomId::parse(id).map_err(|e| Error::bad_json(format!("Invalid room ID in a PDU: {e}"))))
        }
        _ => Some(Err(Error::bad_json("Invalid room ID in a PDU"))),
    }
}

impl Services {
    /// Checks a PDU's format and computes its event ID, then its signatures and content hash: an
    /// event whose hash does not match is redacted (and its ID stays the same). Errors are the
    /// reasons to drop it.
    pub async fn check_signed_pdu(
        &self,
        object: CanonicalJsonObject,
        version: &RoomVersionId,
    ) -> std::result::Result<Built, String> {
        let rules = pdu::rules_of(version).map_err(|e| e.to_string())?;
        let mut built = pdu::from_federation(object, &rules)?;
        match self.verify_event_signatures(&built.json, &rules).await? {
            Verified::All => {}
            Verified::Signatures => {
                tracing::info!(event = %built.pdu.event_id, "content hash mismatch: redacting the event");
                let mut redacted = built.json.clone();
                pdu::redact(&mut redacted, &rules).map_err(|e| e.to_string())?;
                let event_id = built.pdu.event_id.clone();
                built = pdu::from_federation(redacted, &rules)?;
                // Room versions 3+ name events by the reference hash, which redaction keeps.
                if built.pdu.event_id != event_id {
                    return Err("the event ID changed on redaction".into());
                }
            }
        }
        Ok(built)
    }

    /// Verifies the signatures an event needs (its sender's server, and for joins through
    /// restricted rules the authorising server; room versions 1 and 2 the event ID's server),
    /// with keys valid when it was sent (room versions 5+).
    async fn verify_event_signatures(
        &self,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> std::result::Result<Verified, String> {
        let servers = ruma::signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
            .map_err(|e| format!("signatures: {e}"))?;
        let wanted = RemoteKeys::signing_key_ids(object, servers.iter().map(|s| &**s));
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) if rules.enforce_key_validity => {
                Some(u64::try_from(i64::from(*ts)).unwrap_or(0))
            }
            _ => None,
        };
        let keys = self.federation.keys.public_key_map(wanted, ts).await;
        ruma::signatures::verify_event(&keys, object, rules).map_err(|e| format!("signatures: {e}"))
    }

    /// Verifies one server's signature on an event (the invitee's server on an invite it
    /// signed), over the redacted event as signatures are.
    pub async fn verify_server_signature(
        &self,
        object: &CanonicalJsonObject,
        server: &ServerName,
        rules: &RoomVersionRules,
    ) -> std::result::Result<(), String> {
        let wanted = RemoteKeys::signing_key_ids(object, [server]);
        let key_ids = wanted.get(server).cloned().unwrap_or_default();
        if key_ids.is_empty() {
            return Err(format!("no signature by {server}"));
        }
        let keys = self.federation.keys.event_keys(server, &key_ids, None).await.map_err(|e| e.to_string())?;
        let mut redacted = object.clone();
        pdu::redact(&mut redacted, rules).map_err(|e| e.to_string())?;
        super::keys::verify_entity(server.as_str(), &keys, &redacted)
    }

    /// Handles one PDU of a transaction from `origin`: every check on receipt, fetching what is
    /// missing from `origin`. Returns the event ID (when it could be computed) and the outcome.
    pub async fn receive_pdu(&self, origin: &ServerName, raw: &RawValue) -> (Option<OwnedEventId>, Result<()>) {
        let object = match canonical_object(raw) {
            Ok(object) => object,
            Err(e) => return (None, Err(Error::bad_json(e))),
        };
        let room_id = match room_of(&object) {
            Some(Ok(room_id)) => room_id,
            Some(Err(e)) => return (None, Err(e)),
            None => return (None, Err(Error::bad_json("A PDU without a room"))),
        };
        let version = match self.rooms.room(&room_id) {
            Ok(Some(room)) => room.version,
            Ok(None) => return (None, Err(Error::not_found(format!("This server is not in {room_id}")))),
            Err(e) => return (None, Err(e)),
        };
        if let Err(e) = self.check_server_acl(&room_id, origin) {
            return (None, Err(e));
        }
        let built = match self.check_signed_pdu(object, &version).await {
            Ok(built) => built,
            Err(reason) => {
                tracing::info!(%origin, room = %room_id, %reason, "dropped a PDU");
                return (None, Err(Error::forbidden(reason)));
            }
        };
        let event_id = built.pdu.event_id.clone();
        let outcome = self.process_pdu(origin, &version, built, true).await;
        (Some(event_id), outcome)
    }

    /// A checked PDU: its auth chain made whole, its prev events fetched (once, when
    /// `fill_gaps`), the state before it fetched if still cut off, then the room's checks.
    async fn process_pdu(
        &self,
        origin: &ServerName,
        version: &RoomVersionId,
        built: Built,
        fill_gaps: bool,
    ) -> Result<()> {
        let event_id = built.pdu.event_id.clone();
        let room_id = built.pdu.room_id.clone();
        if matches!(self.rooms.event_status(&event_id)?, Some(status) if status != EventStatus::Outlier) {
            return Ok(());
        }
        self.fetch_auth_chain(origin, version, &built.pdu).await?;
        if fill_gaps && !self.rooms.prev_events_without_state(&built.pdu)?.is_empty() {
            self.fetch_missing_prev_events(origin, version, &built.pdu).await;
        }
        let before = if self.rooms.prev_events_without_state(&built.pdu)?.is_empty() {
            StateBefore::PrevEvents
        } else {
            StateBefore::Given(self.fetch_state_before(origin, version, &built.pdu).await?)
        };
        let joining = joined_server(&built.pdu);
        match self.rooms.accept_remote(built, before, None).await? {
            Accepted::Timeline(appended) => {
                tracing::debug!(%origin, room = %room_id, event = %event_id, position = appended.position, "accepted a remote event");
                if let Some(server) = joining {
                    self.federate_presence_to(&room_id, &server);
                }
                Ok(())
            }
            Accepted::SoftFailed | Accepted::Known => Ok(()),
            Accepted::Rejected(reason) => Err(Error::forbidden(reason)),
        }
    }

    /// Makes sure every event the event's auth events lead to is stored: when one is missing,
    /// the event's auth chain is fetched from `origin` (`/event_auth`), checked, and stored as
    /// outliers.
    pub(super) async fn fetch_auth_chain(&self, origin: &ServerName, version: &RoomVersionId, pdu: &Pdu) -> Result<()> {
        if self.rooms.unknown_events(&pdu.auth_events)?.is_empty() {
            return Ok(());
        }
        let request = get_event_authorization::v1::Request::new(pdu.room_id.clone(), pdu.event_id.clone());
        let response = self.federation.client.send(origin, request).await?;
        let events = self.checked_events(&pdu.room_id, version, response.auth_chain.iter().map(|r| &**r)).await;
        self.store_outliers(&pdu.room_id, version, events).await?;
        match self.rooms.unknown_events(&pdu.auth_events)?.first() {
            Some(missing) => Err(Error::forbidden(format!("Auth event {missing} could not be fetched"))),
            None => Ok(()),
        }
    }

    /// Checks fetched events (format, signatures, hashes) of `room_id`, leaving out the bad and
    /// those of other rooms.
    pub async fn checked_events<'a>(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        events: impl Iterator<Item = &'a RawValue>,
    ) -> Vec<Built> {
        let mut checked = Vec::new();
        for raw in events {
            let built = match canonical_object(raw) {
                Ok(object) => self.check_signed_pdu(object, version).await,
                Err(e) => Err(e),
            };
            match built {
                Ok(built) if built.pdu.room_id == room_id => checked.push(built),
                Ok(built) => tracing::info!(event = %built.pdu.event_id, "ignoring a fetched event of another room"),
                Err(reason) => tracing::info!(room = %room_id, %reason, "ignoring a fetched event"),
            }
        }
        checked
    }

    /// Stores checked events as outliers, auth events first (by depth); their own auth events
    /// are fetched first when missing.
    async fn store_outliers(&self, room_id: &RoomId, version: &RoomVersionId, mut events: Vec<Built>) -> Result<()> {
        events.sort_by_key(|built| built.pdu.depth);
        let rejected = self.rooms.store_outliers(room_id, version, events).await?;
        if !rejected.is_empty() {
            tracing::info!(room = %room_id, count = rejected.len(), "fetched events were rejected");
        }
        Ok(())
    }

    /// Fetches the prev events between the room's forward extremities and the event from
    /// `origin` (`/get_missing_events`) and processes them, oldest first, without fetching
    /// further gaps (those get their state fetched instead).
    async fn fetch_missing_prev_events(&self, origin: &ServerName, version: &RoomVersionId, pdu: &Pdu) {
        let Ok(Some(room)) = self.rooms.room(&pdu.room_id) else { return };
        let mut request = get_missing_events::v1::Request::new(
            pdu.room_id.clone(),
            room.extremities.clone(),
            vec![pdu.event_id.clone()],
        );
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        let response = match self.federation.client.send(origin, request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(%origin, room = %pdu.room_id, error = %e, "get_missing_events failed");
                return;
            }
        };
        let mut events = self.checked_events(&pdu.room_id, version, response.events.iter().map(|r| &**r)).await;
        events.sort_by_key(|built| built.pdu.depth);
        for built in events {
            if built.pdu.event_id == pdu.event_id {
                continue;
            }
            let event_id = built.pdu.event_id.clone();
            if let Err(e) = Box::pin(self.process_pdu(origin, version, built, false)).await {
                tracing::info!(%origin, event = %event_id, error = %e, "a missing prev event was not accepted");
            }
        }
    }

    /// The state before an event whose prev events are not all here with their states: the
    /// state after each prev event, ours when we have it, fetched from `origin` otherwise
    /// (`/state_ids` of the prev event, then the events we lack, stored as outliers). One list per
    /// prev event, resolved by the room when they differ.
    pub(super) async fn fetch_state_before(
        &self,
        origin: &ServerName,
        version: &RoomVersionId,
        pdu: &Pdu,
    ) -> Result<Vec<Vec<OwnedEventId>>> {
        let mut states = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            if let Some(state) = self.rooms.state_ids_after(prev)? {
                states.push(state);
                continue;
            }
            let request = get_room_state_ids::v1::Request::new(prev.clone(), pdu.room_id.clone());
            let response = self.federation.client.send(origin, request).await?;
            let mut wanted: BTreeSet<OwnedEventId> = response.pdu_ids.iter().cloned().collect();
            wanted.extend(response.auth_chain_ids.iter().cloned());
            wanted.insert(prev.clone());
            let unknown = self.rooms.unknown_events(wanted.iter())?;
            let fetched = self.fetch_events(origin, &pdu.room_id, version, unknown).await;
            self.store_outliers(&pdu.room_id, version, fetched).await?;
            let mut state = response.pdu_ids;
            // The state after the prev event: before it, and the event itself if it is state.
            if let Some((_, prev_pdu)) = self.rooms.event_by_id(prev)?
                && prev_pdu.is_state()
            {
                state.push(prev.clone());
            }
            let missing = self.rooms.unknown_events(state.iter())?;
            if let Some(missing) = missing.first() {
                return Err(Error::forbidden(format!("State event {missing} could not be fetched from {origin}")));
            }
            states.push(state);
        }
        Ok(states)
    }

    /// Fetches events by ID from `server` (`/event`, a few at a time), checked; those that
    /// cannot be fetched or fail the checks are left out.
    pub async fn fetch_events(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        ids: Vec<OwnedEventId>,
    ) -> Vec<Built> {
        let client = self.federation.client.clone();
        let server: OwnedServerName = server.to_owned();
        let mut raw = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CONCURRENT_FETCHES) {
            let mut tasks = tokio::task::JoinSet::new();
            for id in chunk {
                let (client, server, id) = (client.clone(), server.clone(), id.clone());
                tasks.spawn(async move {
                    let result = client.send(&server, get_event::v1::Request::new(id.clone())).await;
                    (id, result)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((_, Ok(response))) => raw.push(response.pdu),
                    Ok((id, Err(e))) => tracing::info!(%server, event = %id, error = %e, "cannot fetch an event"),
                    Err(e) => tracing::error!(error = %e, "event fetch task failed"),
                }
            }
        }
        self.checked_events(room_id, version, raw.iter().map(|r| &**r)).await
    }
}

#[cfg(test)]
mod tests;

/// The server of the user a membership event joins, when it is one.
pub(super) fn joined_server(pdu: &Pdu) -> Option<OwnedServerName> {
    if pdu.kind.to_string() != "m.room.member" || pdu.content_str("membership").as_deref() != Some("join") {
        return None;
    }
    let user = UserId::parse(pdu.state_key.as_deref()?).ok()?;
    Some(user.server_name().to_owned())
}
