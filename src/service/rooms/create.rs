//! `createRoom`: the events of a new room, in the order the spec gives, written in one batch so a
//! room is created whole or not at all.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId,
    room_version_rules::RoomIdFormatVersion,
};
use serde_json::{Map, Value, json};

use super::{
    EventDraft, RoomHandle, Rooms, Staged,
    pdu::{self, canonical_content},
    state::EMPTY,
};
use crate::{
    config::SUPPORTED_ROOM_VERSIONS,
    error::{Error, ErrorKind, Result},
    storage::{AliasRecord, Batch, RoomRecord, Sequence},
};

/// What a client asks of a new room.
#[derive(Clone, Debug, Default)]
pub struct CreateRoom {
    pub preset: Option<String>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, Map<String, Value>)>,
    pub power_level_content_override: Option<Map<String, Value>>,
    pub creation_content: Option<Map<String, Value>>,
    pub room_version: Option<RoomVersionId>,
}

/// The state events a preset implies: join rule, history visibility, guest access, and whether
/// invitees get the creator's power.
struct Preset {
    join_rule: &'static str,
    guest_access: &'static str,
    invitees_are_admins: bool,
    invite_level: Option<i64>,
}

fn preset(name: &str) -> Result<Preset> {
    match name {
        "private_chat" => Ok(Preset {
            join_rule: "invite",
            guest_access: "can_join",
            invitees_are_admins: false,
            invite_level: Some(0),
        }),
        "trusted_private_chat" => Ok(Preset {
            join_rule: "invite",
            guest_access: "can_join",
            invitees_are_admins: true,
            invite_level: Some(0),
        }),
        "public_chat" => Ok(Preset {
            join_rule: "public",
            guest_access: "forbidden",
            invitees_are_admins: false,
            invite_level: None,
        }),
        other => Err(Error::bad_json(format!("Unknown preset {other}"))),
    }
}

impl Rooms {
    /// Creates a room; returns its ID.
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.room_version.clone().unwrap_or_else(|| self.default_version());
        if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ));
        }
        let rules = pdu::rules_of(&version)?;
        let alias = request.alias_localpart.as_deref().map(|localpart| self.new_local_alias(localpart)).transpose()?;
        let preset =
            preset(request.preset.as_deref().unwrap_or(if request.public { "public_chat" } else { "private_chat" }))?;
        let v12_creators = rules.authorization.explicitly_privilege_room_creators;

        // The create event.
        let mut create_content = request.creation_content.clone().unwrap_or_default();
        create_content.remove("creator");
        create_content.insert("room_version".into(), json!(version));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), json!(creator));
        }
        if v12_creators && preset.invitees_are_admins {
            let mut additional: Vec<Value> = match create_content.remove("additional_creators") {
                Some(Value::Array(list)) => list,
                Some(_) => return Err(Error::bad_json("`additional_creators` must be a list of user IDs")),
                None => Vec::new(),
            };
            additional.extend(request.invite.iter().map(|u| json!(u)));
            create_content.insert("additional_creators".into(), Value::Array(additional));
        }
        if let Some(Value::Array(list)) = create_content.get("additional_creators")
            && list.iter().any(|u| u.as_str().and_then(|u| UserId::parse(u).ok()).is_none())
        {
            return Err(Error::bad_json("`additional_creators` must be a list of user IDs"));
        }

        let mut batch = Batch::new();
        let mut staged = Vec::new();
        let explicit_room_id =
            (rules.room_id_format == RoomIdFormatVersion::V1).then(|| RoomId::new_v1(&self.config.server_name));
        let create = pdu::build(
            &self.keys,
            self.server_name(),
            &version,
            creator,
            EventDraft::state("m.room.create", "", canonical_content(create_content)?),
            pdu::Placement { room_id: explicit_room_id.as_deref(), prev_events: &[], auth_events: &[], depth: 1 },
        )
        .map_err(invalid_state)?;
        let room_id = create.pdu.room_id.clone();
        let _guard = self.locks.lock(&room_id).await;
        if self.storage.room(&room_id)?.is_some() {
            return Err(Error::internal("room ID collision"));
        }
        let record = RoomRecord {
            short_id: self.storage.allocate(&mut batch, Sequence::ShortRoomId),
            version: version.clone(),
            created_ts: crate::service::now_ms(),
            state: EMPTY,
            extremities: Vec::new(),
            depth: 0,
            backfill_from: Vec::new(),
        };
        let mut room = RoomHandle::new(room_id.clone(), record, rules.clone(), Arc::default(), None);
        self.authorize(&room, &create.pdu).map_err(invalid_state)?;
        staged.push(self.stage(&mut batch, &mut room, create, None).await?);

        // The creator joins.
        let join = self.member_content(creator, "join", Map::new())?;
        self.stage_new(
            &mut batch,
            &mut room,
            &mut staged,
            creator,
            EventDraft::state("m.room.member", creator.as_str(), join),
        )
        .await?;

        // Power levels: the defaults, the preset's tweaks, the client's overrides.
        let initial_pl = request.initial_state.iter().find(|(t, k, _)| t == "m.room.power_levels" && k.is_empty());
        let mut power = match initial_pl {
            Some((_, _, content)) => content.clone(),
            None => self.default_power_levels(creator, &request, &preset, v12_creators),
        };
        if let Some(overrides) = &request.power_level_content_override {
            power.extend(overrides.clone());
        }
        self.stage_new(
            &mut batch,
            &mut room,
            &mut staged,
            creator,
            EventDraft::state("m.room.power_levels", "", canonical_content(power)?),
        )
        .await?;

        if let Some(alias) = &alias {
            let content = canonical_content(json_map(json!({ "alias": alias })))?;
            self.stage_new(
                &mut batch,
                &mut room,
                &mut staged,
                creator,
                EventDraft::state("m.room.canonical_alias", "", content),
            )
            .await?;
            batch.put_alias(alias, &AliasRecord { room_id: room_id.clone(), creator: creator.to_owned() });
        }

        // The preset's state, unless initial_state sets the same.
        let overridden = |kind: &str| request.initial_state.iter().any(|(t, k, _)| t == kind && k.is_empty());
        for (kind, content) in [
            ("m.room.join_rules", json!({ "join_rule": preset.join_rule })),
            ("m.room.history_visibility", json!({ "history_visibility": "shared" })),
            ("m.room.guest_access", json!({ "guest_access": preset.guest_access })),
        ] {
            if !overridden(kind) {
                let content = canonical_content(json_map(content))?;
                self.stage_new(&mut batch, &mut room, &mut staged, creator, EventDraft::state(kind, "", content))
                    .await?;
            }
        }

        // initial_state, but not what only the server sets, nor what `name`/`topic` replace.
        for (kind, state_key, content) in &request.initial_state {
            let replaced = (kind == "m.room.name" && request.name.is_some())
                || (kind == "m.room.topic" && request.topic.is_some())
                || (kind == "m.room.power_levels" && state_key.is_empty());
            if replaced || kind == "m.room.create" || kind == "m.room.member" {
                continue;
            }
            let draft = EventDraft::state(kind.as_str(), state_key.as_str(), canonical_content(content.clone())?);
            self.stage_new(&mut batch, &mut room, &mut staged, creator, draft).await?;
        }

        if let Some(name) = &request.name {
            let content = canonical_content(json_map(json!({ "name": name })))?;
            self.stage_new(&mut batch, &mut room, &mut staged, creator, EventDraft::state("m.room.name", "", content))
                .await?;
        }
        if let Some(topic) = &request.topic {
            let content = canonical_content(json_map(json!({
                "topic": topic,
                "m.topic": { "m.text": [{ "body": topic, "mimetype": "text/plain" }] },
            })))?;
            self.stage_new(&mut batch, &mut room, &mut staged, creator, EventDraft::state("m.room.topic", "", content))
                .await?;
        }

        for invitee in &request.invite {
            let mut extra = Map::new();
            if request.is_direct {
                extra.insert("is_direct".into(), Value::Bool(true));
            }
            let content = self.member_content(invitee, "invite", extra)?;
            self.stage_new(
                &mut batch,
                &mut room,
                &mut staged,
                creator,
                EventDraft::state("m.room.member", invitee.as_str(), content),
            )
            .await?;
        }

        if request.public {
            batch.set_public(&room_id, true);
        }
        self.commit(batch, staged).await?;
        tracing::info!(room = %room_id, %version, creator = %creator, "room created");
        Ok(room_id)
    }

    /// Builds, authorizes and stages one more event of a room being created. A refusal here
    /// means the request asked for an impossible room: `M_INVALID_ROOM_STATE`.
    async fn stage_new(
        &self,
        batch: &mut Batch,
        room: &mut RoomHandle,
        staged: &mut Vec<Staged>,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<()> {
        let auth_events = self.auth_events_for(room, sender, &draft)?;
        let prev_events = self.references(room, &room.record.extremities)?;
        let built = pdu::build(
            &self.keys,
            self.server_name(),
            &room.record.version,
            sender,
            draft,
            pdu::Placement {
                room_id: Some(&room.room_id),
                prev_events: &prev_events,
                auth_events: &auth_events,
                depth: room.record.depth + 1,
            },
        )?;
        self.authorize(room, &built.pdu).map_err(invalid_state)?;
        staged.push(self.stage(batch, room, built, None).await?);
        Ok(())
    }

    fn default_power_levels(
        &self,
        creator: &UserId,
        request: &CreateRoom,
        preset: &Preset,
        v12_creators: bool,
    ) -> Map<String, Value> {
        let mut users = Map::new();
        if !v12_creators {
            users.insert(creator.to_string(), json!(100));
            if preset.invitees_are_admins {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), json!(100));
                }
            }
        }
        let tombstone = if v12_creators { 150 } else { 100 };
        json_map(json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": tombstone,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": preset.invite_level.unwrap_or(50),
        }))
    }

    /// A local alias from its localpart: `#localpart:server_name`, not yet taken.
    pub fn new_local_alias(&self, localpart: &str) -> Result<OwnedRoomAliasId> {
        let alias = RoomAliasId::parse(format!("#{localpart}:{}", self.config.server_name))
            .map_err(|e| Error::invalid_param(format!("Invalid room alias: {e}")))?;
        if self.storage.alias(&alias)?.is_some() {
            return Err(Error::new(ErrorKind::RoomInUse, "The room alias is already taken"));
        }
        Ok(alias)
    }

    /// The content of a member event for `user`, with their profile.
    pub fn member_content(
        &self,
        user: &UserId,
        membership: &str,
        extra: Map<String, Value>,
    ) -> Result<CanonicalJsonObject> {
        let mut content = extra;
        content.insert("membership".into(), json!(membership));
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = self.storage.profile_field(user, field)? {
                content.entry(field).or_insert(value);
            }
        }
        canonical_content(content)
    }
}

/// Auth-rule refusals while creating a room mean the request's state is impossible.
fn invalid_state(error: Error) -> Error {
    match error {
        Error::Matrix { kind: ErrorKind::Forbidden, message } => Error::new(ErrorKind::InvalidRoomState, message),
        other => other,
    }
}

fn json_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
