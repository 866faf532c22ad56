//! Memberships across servers, both ways.
//!
//! Serving: `make_join`/`make_leave`/`make_knock` templates, `send_join`/`send_leave`/`send_knock`
//! (the event checked like any received PDU, stored, and sent on to the room's other servers),
//! and invites of our users (`/v2/invite`: signed by us, shown in the invitee's sync).
//!
//! For local users: joining a room this server is not in (make_join, sign, send_join, the state
//! and auth chain checked, the room stored in one write), leaving one where no other local user
//! is (make_leave/send_leave), declining a remote invite, and inviting a user of another server
//! (their server signs the invite before we store it).

use std::collections::BTreeSet;

use reqwest::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, RoomAliasId,
    RoomId, RoomVersionId, ServerName, UserId,
    api::federation::{
        membership::{create_join_event, create_leave_event, prepare_join_event, prepare_leave_event},
        query::get_room_information,
    },
};
use serde_json::{Map, Value, json, value::RawValue};

use super::{client::Signing, inbound::canonical_object};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, ErrorKind, Result},
    service::{
        Services,
        rooms::{
            Appended, MembershipChange,
            pdu::{self, Built},
            remote::{Accepted, StateBefore},
            serve::stripped,
        },
    },
};

/// A membership that travels through `make_*`/`send_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Join,
    Leave,
    Knock,
}

impl Remote {
    pub fn membership(self) -> &'static str {
        match self {
            Remote::Join => "join",
            Remote::Leave => "leave",
            Remote::Knock => "knock",
        }
    }
}

fn json_of(object: &CanonicalJsonObject) -> Box<RawValue> {
    RawValue::from_string(serde_json::to_string(object).expect("canonical JSON serializes")).expect("valid JSON")
}

impl Services {
    // ----- serving other servers -----

    /// `make_join`, `make_leave`, `make_knock`: a template for `user` of `origin`. `versions`
    /// are the room versions the asking server supports (`ver`); a room of another version is
    /// `M_INCOMPATIBLE_ROOM_VERSION`.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        kind: Remote,
        versions: Option<&[RoomVersionId]>,
    ) -> Result<Value> {
        if user.server_name() != origin {
            return Err(Error::forbidden("The user is not of the asking server"));
        }
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        self.check_server_acl(room_id, origin)?;
        if let Some(versions) = versions
            && !versions.contains(&room.version)
        {
            return Err(Error::new(
                ErrorKind::IncompatibleRoomVersion { room_version: room.version.to_string() },
                format!("The room is of version {}, which the asking server does not support", room.version),
            ));
        }
        let (version, template) = self.rooms.membership_template(room_id, user, kind.membership()).await?;
        Ok(json!({ "room_version": version, "event": template }))
    }

    /// `send_join`, `send_leave`, `send_knock` (v2): the signed membership event of a user of
    /// `origin`, checked like any received PDU, stored, and sent on to the room's other servers.
    /// A join authorised through a restricted join rule by one of our users gets our signature.
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        raw: &RawValue,
        kind: Remote,
    ) -> Result<Value> {
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        self.check_server_acl(room_id, origin)?;
        let object = canonical_object(raw).map_err(Error::bad_json)?;
        let mut built = self.check_signed_pdu(object, &room.version).await.map_err(Error::forbidden)?;
        let pdu = &built.pdu;
        if pdu.event_id != *event_id || pdu.room_id != room_id {
            return Err(Error::bad_json("The event does not match the request's room and event IDs"));
        }
        if pdu.kind.to_string() != "m.room.member"
            || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
            || pdu.sender.server_name() != origin
            || pdu.content_str("membership").as_deref() != Some(kind.membership())
        {
            return Err(Error::bad_json(format!("Not a {} of a user of the sending server", kind.membership())));
        }
        let authorised_here = pdu
            .content_map()
            .get("join_authorised_via_users_server")
            .and_then(Value::as_str)
            .and_then(|u| UserId::parse(u).ok())
            .is_some_and(|u| u.server_name() == self.config.server_name);
        if kind == Remote::Join && authorised_here {
            let mut json = built.json.clone();
            self.keys.sign_event(self.config.server_name.as_str(), &mut json, &room.version)?;
            built = Built { pdu: built.pdu, json };
        }
        let missing = self.rooms.unknown_events(built.pdu.auth_events.iter().chain(&built.pdu.prev_events))?;
        if let Some(missing) = missing.first() {
            return Err(Error::bad_json(format!(
                "The event cites {missing}, unknown here: ask make_{} again",
                kind.membership()
            )));
        }
        let signed = built.json.clone();
        match self.rooms.accept_remote(built, StateBefore::PrevEvents, Some(origin)).await? {
            Accepted::Timeline(_) if kind == Remote::Join => self.federate_presence_to(room_id, origin),
            Accepted::Timeline(_) | Accepted::Known => {}
            Accepted::SoftFailed => {
                return Err(Error::forbidden("The event is not allowed by the room's current state"));
            }
            Accepted::Rejected(reason) => return Err(Error::forbidden(reason)),
        }
        match kind {
            Remote::Join => {
                let state = self.rooms.state_for_server(room_id, Some(event_id))?;
                let pdus = |ids: Vec<OwnedEventId>| -> Result<Vec<Box<RawValue>>> {
                    ids.iter().filter_map(|id| self.rooms.pdu_json(id).transpose()).collect::<Result<_>>()
                };
                let state_ids: Vec<OwnedEventId> = state.state.iter().map(|pdu| pdu.event_id.clone()).collect();
                let mut chain_of = state_ids.clone();
                chain_of.push(event_id.clone());
                let auth_chain = self.rooms.auth_chain_of(chain_of.into_iter())?;
                Ok(json!({
                    "origin": self.config.server_name,
                    "state": pdus(state_ids)?,
                    "auth_chain": pdus(auth_chain)?,
                    "event": signed,
                    "members_omitted": false,
                    "servers_in_room": self.rooms.joined_servers(room_id)?,
                }))
            }
            Remote::Leave => Ok(json!({})),
            Remote::Knock => Ok(json!({ "knock_room_state": self.rooms.stripped_state(room_id)? })),
        }
    }

    /// `/v2/invite`: another server invites one of our users. The invite is checked (signed by
    /// its sender's server, about a local user who exists), signed by us, and shown in the
    /// user's sync with the stripped state the inviting server sent.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        version: &RoomVersionId,
        raw: &RawValue,
        invite_room_state: Vec<Value>,
    ) -> Result<Value> {
        if !SUPPORTED_ROOM_VERSIONS.contains(version) {
            return Err(Error::new(
                ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
                format!("Room version {version} is not supported here"),
            ));
        }
        if self.rooms.room(room_id)?.is_some() {
            self.check_server_acl(room_id, origin)?;
        }
        let object = canonical_object(raw).map_err(Error::bad_json)?;
        let built = self.check_signed_pdu(object, version).await.map_err(Error::forbidden)?;
        let pdu = &built.pdu;
        let invitee = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        if pdu.event_id != *event_id
            || pdu.room_id != room_id
            || pdu.kind.to_string() != "m.room.member"
            || pdu.content_str("membership").as_deref() != Some("invite")
            || pdu.sender.server_name() != origin
        {
            return Err(Error::bad_json("Not an invite by a user of the sending server"));
        }
        let Some(invitee) = invitee.filter(|u| u.server_name() == self.config.server_name) else {
            return Err(Error::bad_json("The invitee is not a user of this server"));
        };
        if self.storage.user(&invitee)?.is_none_or(|record| record.deactivated) {
            return Err(Error::not_found("No such user"));
        }
        let mut json = built.json.clone();
        self.keys.sign_event(self.config.server_name.as_str(), &mut json, version)?;
        let signed = Built { pdu: built.pdu, json: json.clone() };
        let mut state: Vec<Value> = invite_room_state.into_iter().filter(Value::is_object).collect();
        state.push(stripped(&signed.pdu));
        self.rooms.store_remote_invite(&invitee, version, signed, state).await?;
        tracing::info!(%origin, room = %room_id, user = %invitee, "invited by another server");
        Ok(json!({ "event": json }))
    }

    // ----- for local users -----

    /// A room ID, or an alias resolved here or by its server (`/query/directory`), with the
    /// servers to join it through.
    pub async fn resolve_room(&self, id_or_alias: &str) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        if !id_or_alias.starts_with('#') {
            let room_id =
                RoomId::parse(id_or_alias).map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
            return Ok((room_id, Vec::new()));
        }
        let alias: OwnedRoomAliasId =
            RoomAliasId::parse(id_or_alias).map_err(|e| Error::invalid_param(format!("Invalid room alias: {e}")))?;
        if alias.server_name() == self.config.server_name {
            let (room_id, _) = self.rooms.resolve_alias(&alias)?;
            return Ok((room_id, Vec::new()));
        }
        let request = get_room_information::v1::Request::new(alias.clone());
        match self.federation.client.send(alias.server_name(), request).await {
            Ok(response) => {
                let mut servers = response.servers;
                servers.retain(|s| *s != self.config.server_name);
                servers.insert(0, alias.server_name().to_owned());
                dedup(&mut servers);
                Ok((response.room_id, servers))
            }
            Err(Error::Remote(remote)) if remote.status == Some(404) => {
                Err(Error::not_found(format!("Room alias {alias} not found")))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a local user other than `except` is joined to the room: then the room's events
    /// reach us, and our own membership changes are plain local events.
    fn local_members_joined(&self, room_id: &RoomId, except: Option<&UserId>) -> Result<bool> {
        let Some(room) = self.rooms.room(room_id)? else { return Ok(false) };
        Ok(self.storage.members(room.short_id)?.iter().any(|(user, membership)| {
            membership == "join" && user.server_name() == self.config.server_name && Some(&**user) != except
        }))
    }

    /// Joins a local user to a room: a local event when a local user is in the room already,
    /// through one of `servers` otherwise (those given, the room ID's, the inviter's).
    pub async fn join_room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        servers: Vec<OwnedServerName>,
        reason: Option<String>,
        extra: Map<String, Value>,
    ) -> Result<Appended> {
        let known = self.rooms.room(room_id)?.is_some();
        if known && (self.local_members_joined(room_id, None)? || servers_are_only_us(&servers, self)) {
            return self.rooms.change_membership(room_id, user, MembershipChange::Join { reason, extra }).await;
        }
        let mut candidates = servers;
        if let Some(invite) = self.storage.remote_invite(user, room_id)?
            && let Some((_, pdu)) = self.rooms.event_by_id(&invite.event_id)?
        {
            candidates.push(pdu.sender.server_name().to_owned());
        }
        if let Some(server) = room_id.server_name() {
            candidates.push(server.to_owned());
        }
        candidates.extend(self.rooms.remote_servers_in_room(room_id)?);
        candidates.retain(|s| *s != self.config.server_name);
        dedup(&mut candidates);
        if candidates.is_empty() {
            if known {
                return self.rooms.change_membership(room_id, user, MembershipChange::Join { reason, extra }).await;
            }
            return Err(Error::not_found("No server to join the room through"));
        }
        let mut content = extra;
        content.remove("membership");
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        for field in ["displayname", "avatar_url"] {
            if !content.contains_key(field)
                && let Some(value) = self.storage.profile_field(user, field)?
            {
                content.insert(field.into(), value);
            }
        }
        let mut last_error = Error::not_found("No server to join the room through");
        for server in &candidates {
            match self.join_through(server, user, room_id, &content).await {
                Ok(appended) => {
                    // The room's servers learn our user's presence, as they would on any change.
                    self.federate_presence(user);
                    return Ok(appended);
                }
                Err(e) => {
                    tracing::info!(%server, room = %room_id, error = %e, "joining through a server failed");
                    last_error = e;
                }
            }
        }
        Err(match last_error {
            Error::Remote(remote) if remote.errcode.as_deref() == Some("M_FORBIDDEN") => {
                Error::forbidden(format!("The room refused the join: {}", remote.message))
            }
            other => other,
        })
    }

    /// make_join, sign, send_join (v2) through `server`; the answer's state and auth chain are
    /// checked and stored with the join in one write.
    async fn join_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        content: &Map<String, Value>,
    ) -> Result<Appended> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = SUPPORTED_ROOM_VERSIONS.to_vec();
        let template = self.federation.client.send(server, request).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(Error::new(
                ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
                format!("Room version {version} is not supported here"),
            ));
        }
        let object = self.fill_template(&template.event, room_id, user, "join", content)?;
        let join = pdu::sign_new(&self.keys, self.config.server_name.as_str(), &version, object, Some(room_id))?;
        let request =
            create_join_event::v2::Request::new(room_id.to_owned(), join.pdu.event_id.clone(), json_of(&join.json));
        let response = self.federation.client.send(server, request).await?.room_state;
        // The resident server may have added its signature (restricted joins).
        let join = match &response.event {
            Some(raw) => match canonical_object(raw)
                .map_err(Error::bad_json)
                .and_then(|object| pdu::from_federation(object, &pdu::rules_of(&version)?).map_err(Error::bad_json))
            {
                Ok(signed) if signed.pdu.event_id == join.pdu.event_id => signed,
                _ => join,
            },
            None => join,
        };
        let state = self.checked_events(room_id, &version, response.state.iter().map(|r| &**r)).await;
        let state_ids: Vec<OwnedEventId> = state.iter().map(|built| built.pdu.event_id.clone()).collect();
        let mut events = state;
        let mut seen: BTreeSet<OwnedEventId> = state_ids.iter().cloned().collect();
        for built in self.checked_events(room_id, &version, response.auth_chain.iter().map(|r| &**r)).await {
            if seen.insert(built.pdu.event_id.clone()) {
                events.push(built);
            }
        }
        self.rooms.store_remote_join(room_id, &version, events, &state_ids, join).await
    }

    /// Our copy of another server's membership template: checked to be about `user` in
    /// `room_id`, with our content and time.
    fn fill_template(
        &self,
        template: &RawValue,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        content: &Map<String, Value>,
    ) -> Result<CanonicalJsonObject> {
        let mut object = canonical_object(template).map_err(|e| Error::unreachable(room_id, e))?;
        let field = |name: &str| match object.get(name) {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        if field("type").as_deref() != Some("m.room.member")
            || field("sender").as_deref() != Some(user.as_str())
            || field("state_key").as_deref() != Some(user.as_str())
            || field("room_id").as_deref() != Some(room_id.as_str())
        {
            return Err(Error::unreachable(room_id, "the membership template is not about this user and room"));
        }
        let mut new_content = match object.remove("content") {
            Some(CanonicalJsonValue::Object(c)) => c,
            _ => CanonicalJsonObject::new(),
        };
        for (key, value) in pdu::canonical_content(content.clone())? {
            new_content.entry(key).or_insert(value);
        }
        new_content.insert("membership".into(), CanonicalJsonValue::String(membership.to_owned()));
        object.insert("content".into(), CanonicalJsonValue::Object(new_content));
        object.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(crate::service::now_ms().try_into().unwrap_or_default()),
        );
        Ok(object)
    }

    /// A local user knocks on a room: a local event when a local user is in the room, through
    /// one of `servers` (make_knock, sign, send_knock) otherwise; the room's stripped state is
    /// shown in their sync until the knock is answered.
    pub async fn knock_room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        servers: Vec<OwnedServerName>,
        reason: Option<String>,
    ) -> Result<()> {
        if self.rooms.room(room_id)?.is_some() && self.local_members_joined(room_id, None)? {
            self.rooms.change_membership(room_id, user, MembershipChange::Knock { reason }).await?;
            return Ok(());
        }
        let mut candidates = servers;
        if let Some(server) = room_id.server_name() {
            candidates.push(server.to_owned());
        }
        candidates.extend(self.rooms.remote_servers_in_room(room_id)?);
        candidates.retain(|s| *s != self.config.server_name);
        dedup(&mut candidates);
        let mut content = Map::new();
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        let mut last_error = Error::not_found("No server to knock through");
        for server in &candidates {
            match self.knock_through(server, user, room_id, &content).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, room = %room_id, error = %e, "knocking through a server failed");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn knock_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        content: &Map<String, Value>,
    ) -> Result<()> {
        let versions: Vec<String> = SUPPORTED_ROOM_VERSIONS.iter().map(|v| format!("ver={v}")).collect();
        let path = format!(
            "/_matrix/federation/v1/make_knock/{}/{}?{}",
            urlencode(room_id.as_str()),
            urlencode(user.as_str()),
            versions.join("&")
        );
        let template = self.federation.client.request_json(server, Method::GET, &path, None, Signing::Signed).await?;
        let version = template
            .get("room_version")
            .and_then(Value::as_str)
            .and_then(|v| RoomVersionId::try_from(v).ok())
            .ok_or_else(|| Error::unreachable(server, "make_knock named no room version"))?;
        let event = template.get("event").ok_or_else(|| Error::unreachable(server, "make_knock gave no event"))?;
        let raw = serde_json::value::to_raw_value(event).map_err(|e| Error::internal(e.to_string()))?;
        let object = self.fill_template(&raw, room_id, user, "knock", content)?;
        let knock = pdu::sign_new(&self.keys, self.config.server_name.as_str(), &version, object, Some(room_id))?;
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            urlencode(room_id.as_str()),
            urlencode(knock.pdu.event_id.as_str())
        );
        let body = serde_json::to_value(&knock.json).map_err(|e| Error::internal(e.to_string()))?;
        let answer =
            self.federation.client.request_json(server, Method::PUT, &path, Some(&body), Signing::Signed).await?;
        let mut state: Vec<Value> = answer
            .get("knock_room_state")
            .and_then(Value::as_array)
            .map(|events| events.iter().filter(|e| e.is_object()).cloned().collect())
            .unwrap_or_default();
        state.push(stripped(&knock.pdu));
        self.rooms.store_remote_membership(user, &version, knock, state, "knock").await
    }

    /// A local user leaves a room (or declines an invite): a local event when another local user
    /// is in the room, make_leave/send_leave through a server in the room otherwise.
    pub async fn leave_room(&self, user: &UserId, room_id: &RoomId, reason: Option<String>) -> Result<()> {
        let known = self.rooms.room(room_id)?.is_some();
        let joined_here = known
            && self.rooms.current_state_event(room_id, "m.room.member", user.as_str())?.is_some_and(|pdu| {
                matches!(pdu.content_str("membership").as_deref(), Some("join" | "invite" | "knock"))
            });
        let mut servers = Vec::new();
        if let Some(invite) = self.storage.remote_invite(user, room_id)?
            && let Some((_, pdu)) = self.rooms.event_by_id(&invite.event_id)?
        {
            servers.push(pdu.sender.server_name().to_owned());
        }
        servers.extend(self.rooms.remote_servers_in_room(room_id)?);
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        servers.retain(|s| *s != self.config.server_name);
        dedup(&mut servers);
        if joined_here && (self.local_members_joined(room_id, Some(user))? || servers.is_empty()) {
            self.rooms.change_membership(room_id, user, MembershipChange::Leave { reason }).await?;
            return Ok(());
        }
        if servers.is_empty() {
            return Err(Error::forbidden("You are not in this room"));
        }
        let mut last_error = Error::forbidden("You are not in this room");
        for server in &servers {
            match self.leave_through(server, user, room_id, reason.as_deref()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, room = %room_id, error = %e, "leaving through a server failed");
                    last_error = e;
                }
            }
        }
        // A room that no server will let us leave (it is gone, or refuses): the invite or
        // membership is dropped here all the same, as Synapse does for invites.
        if !joined_here {
            tracing::info!(room = %room_id, %user, error = %last_error, "declining an invite locally");
            let leave = self.local_leave_stand_in(user, room_id)?;
            self.rooms.store_remote_leave(room_id, user, leave).await?;
            return Ok(());
        }
        Err(last_error)
    }

    async fn leave_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let template = self
            .federation
            .client
            .send(server, prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()))
            .await?;
        let version = match template.room_version {
            Some(version) => version,
            None => self.rooms.room(room_id)?.map_or(RoomVersionId::V1, |r| r.version),
        };
        let mut content = Map::new();
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        let object = self.fill_template(&template.event, room_id, user, "leave", &content)?;
        let leave = pdu::sign_new(&self.keys, self.config.server_name.as_str(), &version, object, Some(room_id))?;
        let request =
            create_leave_event::v2::Request::new(room_id.to_owned(), leave.pdu.event_id.clone(), json_of(&leave.json));
        self.federation.client.send(server, request).await?;
        self.rooms.store_remote_leave(room_id, user, leave).await?;
        Ok(())
    }

    /// A leave event of our own for an invite no server will let us decline (never sent: it only
    /// records the refusal here).
    fn local_leave_stand_in(&self, user: &UserId, room_id: &RoomId) -> Result<Built> {
        let version = self.storage.remote_invite(user, room_id)?.map_or(RoomVersionId::V10, |i| i.room_version);
        let draft = crate::service::rooms::EventDraft::state(
            "m.room.member",
            user.as_str(),
            pdu::canonical_content(Map::from_iter([("membership".to_owned(), json!("leave"))]))?,
        );
        pdu::build(
            &self.keys,
            self.config.server_name.as_str(),
            &version,
            user,
            draft,
            pdu::Placement { room_id: Some(room_id), prev_events: &[], auth_events: &[], depth: 1 },
        )
    }

    /// Invites a user: of this server, a local event; of another, their server signs the invite
    /// (`/v2/invite`) before it is stored and sent to the room.
    pub async fn invite_user(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        let change = MembershipChange::Invite { target: target.to_owned(), reason, is_direct };
        if target.server_name() == self.config.server_name {
            self.rooms.change_membership(room_id, sender, change).await?;
            return Ok(());
        }
        let Some(prepared) = self.rooms.prepare_membership(room_id, sender, change).await? else { return Ok(()) };
        let version = self.rooms.room_exists(room_id)?.version;
        let mut invite_state = self.rooms.stripped_state(room_id)?;
        if let Some(member) = self.rooms.current_state_event(room_id, "m.room.member", sender.as_str())? {
            invite_state.push(stripped(&member));
        }
        let body = json!({
            "room_version": version,
            "event": prepared.built.json,
            "invite_room_state": invite_state,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            urlencode(room_id.as_str()),
            urlencode(prepared.built.pdu.event_id.as_str())
        );
        let answer = self
            .federation
            .client
            .request_json(target.server_name(), Method::PUT, &path, Some(&body), Signing::Signed)
            .await
            .map_err(|e| match e {
                Error::Remote(remote) if remote.status.is_some_and(|s| (400..500).contains(&s)) => {
                    Error::forbidden(format!("The invitee's server refused the invite: {}", remote.message))
                }
                other => other,
            })?;
        let event =
            answer.get("event").ok_or_else(|| Error::unreachable(target.server_name(), "no event in the answer"))?;
        let raw = serde_json::value::to_raw_value(event).map_err(|e| Error::internal(e.to_string()))?;
        let signed = canonical_object(&raw).map_err(|e| Error::unreachable(target.server_name(), e))?;
        // Theirs must be our event, with their signature.
        let checked = self
            .check_signed_pdu(signed.clone(), &version)
            .await
            .map_err(|e| Error::unreachable(target.server_name(), e))?;
        if checked.pdu.event_id != prepared.built.pdu.event_id {
            return Err(Error::unreachable(target.server_name(), "the signed invite is another event"));
        }
        self.verify_server_signature(&signed, target.server_name(), &pdu::rules_of(&version)?)
            .await
            .map_err(|e| Error::unreachable(target.server_name(), format!("the signed invite: {e}")))?;
        self.rooms.commit_membership(prepared, checked.json).await?;
        Ok(())
    }
}

/// Percent-encodes a path segment.
fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn dedup(servers: &mut Vec<OwnedServerName>) {
    let mut seen = BTreeSet::new();
    servers.retain(|s| seen.insert(s.clone()));
}

fn servers_are_only_us(servers: &[OwnedServerName], services: &Services) -> bool {
    !servers.is_empty() && servers.iter().all(|s| *s == services.config.server_name)
}
