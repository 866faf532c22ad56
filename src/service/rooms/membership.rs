//! Membership: join, leave, invite, kick, ban, unban, knock, forget. The auth rules decide what
//! is allowed; the checks here add what Synapse and clients expect on top (a kick needs someone to
//! kick, joining twice changes nothing, restricted rooms name who authorised a join).

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{Appended, EventDraft, RoomHandle, Rooms, pdu::Built};
use crate::{
    error::{Error, ErrorKind, Result},
    storage::Batch,
};

/// A change of membership asked by `sender`.
#[derive(Clone, Debug)]
pub enum MembershipChange {
    /// `extra` holds keys the client added to the request body, copied into the content.
    Join {
        reason: Option<String>,
        extra: Map<String, Value>,
    },
    Leave {
        reason: Option<String>,
    },
    Knock {
        reason: Option<String>,
    },
    Invite {
        target: OwnedUserId,
        reason: Option<String>,
        is_direct: bool,
    },
    Kick {
        target: OwnedUserId,
        reason: Option<String>,
    },
    Ban {
        target: OwnedUserId,
        reason: Option<String>,
    },
    Unban {
        target: OwnedUserId,
        reason: Option<String>,
    },
}

/// What a membership change comes to: a new event, or the current one when nothing changes.
enum Membership {
    New(EventDraft),
    Unchanged(Appended),
}

/// A membership event built and authorized, not stored yet, with its room locked: for changes
/// another server must sign first (invites of its users).
pub struct PreparedMembership<'a> {
    _guard: crate::service::locks::KeyedGuard<'a, ruma::OwnedRoomId>,
    room: RoomHandle,
    pub built: Built,
}

impl Rooms {
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        change: MembershipChange,
    ) -> Result<Appended> {
        let (_guard, mut room) = self.lock(room_id).await?;
        match self.membership_event(&room, sender, change)? {
            Membership::New(draft) => self.append(&mut room, sender, draft, None).await,
            Membership::Unchanged(appended) => Ok(appended),
        }
    }

    /// A membership event built and authorized under the room's lock, for `commit_membership`
    /// once another server has signed it. `None` when nothing changes.
    pub async fn prepare_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        change: MembershipChange,
    ) -> Result<Option<PreparedMembership<'_>>> {
        let (guard, room) = self.lock(room_id).await?;
        let Membership::New(draft) = self.membership_event(&room, sender, change)? else { return Ok(None) };
        let built = self.build_authorized(&room, sender, draft)?;
        Ok(Some(PreparedMembership { _guard: guard, room, built }))
    }

    /// Stores a prepared membership event as `json` says (the same event, with another
    /// server's signature added), and queues it for the servers in the room.
    pub async fn commit_membership(
        &self,
        prepared: PreparedMembership<'_>,
        json: ruma::CanonicalJsonObject,
    ) -> Result<Appended> {
        let PreparedMembership { _guard, mut room, built } = prepared;
        let built = Built { pdu: built.pdu, json };
        self.append_built(&mut room, built, None, |_, _| Ok(())).await
    }

    /// The event a membership change asks for, checked against what clients and Synapse expect
    /// on top of the auth rules.
    fn membership_event(&self, room: &RoomHandle, sender: &UserId, change: MembershipChange) -> Result<Membership> {
        let current = |user: &UserId| -> Result<Option<String>> {
            Ok(self
                .state_event(&room.state, "m.room.member", user.as_str())?
                .and_then(|pdu| pdu.content_str("membership")))
        };
        let (target, membership, mut content): (OwnedUserId, &str, Map<String, Value>) = match change {
            MembershipChange::Join { reason, mut extra } => {
                if current(sender)?.as_deref() == Some("ban") {
                    return Err(Error::new(ErrorKind::BadState, "You are banned from this room"));
                }
                if current(sender)?.as_deref() == Some("join") {
                    // Joining again changes nothing; the current join event is the answer.
                    let pdu = self.state_event(&room.state, "m.room.member", sender.as_str())?.expect("joined");
                    return self.appended(&pdu.event_id).map(Membership::Unchanged);
                }
                extra.remove("membership");
                with_reason(&mut extra, reason);
                if let Some(authoriser) = self.join_authoriser(room, sender)? {
                    extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
                }
                (sender.to_owned(), "join", extra)
            }
            MembershipChange::Leave { reason } => {
                if matches!(current(sender)?.as_deref(), None | Some("leave")) {
                    return Err(Error::forbidden("You are not in this room"));
                }
                (sender.to_owned(), "leave", with_reason(&mut Map::new(), reason).clone())
            }
            MembershipChange::Knock { reason } => {
                if !room.rules.authorization.knocking {
                    return Err(Error::forbidden(format!(
                        "Room version {} does not allow knocking",
                        room.record.version
                    )));
                }
                (sender.to_owned(), "knock", with_reason(&mut Map::new(), reason).clone())
            }
            MembershipChange::Invite { target, reason, is_direct } => {
                if current(&target)?.as_deref() == Some("ban") {
                    return Err(Error::new(ErrorKind::BadState, "The user is banned from this room"));
                }
                let mut extra = Map::new();
                if is_direct {
                    extra.insert("is_direct".into(), Value::Bool(true));
                }
                with_reason(&mut extra, reason);
                (target, "invite", extra)
            }
            MembershipChange::Kick { target, reason } => {
                if !matches!(current(&target)?.as_deref(), Some("join" | "invite" | "knock")) {
                    return Err(Error::forbidden("The user is not in the room"));
                }
                (target, "leave", with_reason(&mut Map::new(), reason).clone())
            }
            MembershipChange::Ban { target, reason } => (target, "ban", with_reason(&mut Map::new(), reason).clone()),
            MembershipChange::Unban { target, reason } => {
                if current(&target)?.as_deref() != Some("ban") {
                    return Err(Error::new(ErrorKind::BadState, "The user is not banned"));
                }
                (target, "leave", with_reason(&mut Map::new(), reason).clone())
            }
        };
        // Invites, joins and knocks carry the member's profile, so clients can show it at once.
        if matches!(membership, "join" | "invite" | "knock") {
            for field in ["displayname", "avatar_url"] {
                if !content.contains_key(field)
                    && let Some(value) = self.storage.profile_field(&target, field)?
                {
                    content.insert(field.into(), value);
                }
            }
        }
        content.insert("membership".into(), json!(membership));
        Ok(Membership::New(EventDraft::state("m.room.member", target.as_str(), super::canonical_content(content)?)))
    }

    /// For a join under a restricted join rule, a local member who may invite and so vouches for
    /// the join, if the joiner is not invited or joined already.
    pub(super) fn join_authoriser(&self, room: &RoomHandle, user: &UserId) -> Result<Option<OwnedUserId>> {
        let Some(rules) = self.state_content(&room.state, "m.room.join_rules", "")? else { return Ok(None) };
        let join_rule = rules.get("join_rule").and_then(Value::as_str).unwrap_or_default();
        if !matches!(join_rule, "restricted" | "knock_restricted") {
            return Ok(None);
        }
        let membership =
            self.state_event(&room.state, "m.room.member", user.as_str())?.and_then(|p| p.content_str("membership"));
        if matches!(membership.as_deref(), Some("invite" | "join")) {
            return Ok(None);
        }
        let allowed = rules.get("allow").and_then(Value::as_array).into_iter().flatten().any(|condition| {
            condition.get("type").and_then(Value::as_str) == Some("m.room_membership")
                && condition
                    .get("room_id")
                    .and_then(Value::as_str)
                    .and_then(|r| RoomId::parse(r).ok())
                    .and_then(|r| self.storage.membership(user, &r).ok().flatten())
                    .is_some_and(|m| m.membership == "join")
        });
        if !allowed {
            return Ok(None);
        }
        let power = self.power_levels(&room.state, &room.record.version)?;
        let local = self.config.server_name.as_str();
        Ok(self
            .storage
            .members(room.record.short_id)?
            .into_iter()
            .filter(|(member, membership)| membership == "join" && member.server_name() == local)
            .map(|(member, _)| member)
            .find(|member| power.user_can_invite(member)))
    }

    /// Forgets a room the user has left: it disappears from their lists.
    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let record =
            self.storage.membership(user, room_id)?.ok_or_else(|| Error::not_found("You were never in this room"))?;
        if matches!(record.membership.as_str(), "join" | "invite" | "knock") {
            return Err(Error::new(ErrorKind::Unknown, "Leave the room before forgetting it"));
        }
        let mut batch = Batch::new();
        batch.forget_room(user, room_id, &record);
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// Rooms the user is joined to.
    pub fn joined_rooms(&self, user: &UserId) -> Result<Vec<ruma::OwnedRoomId>> {
        Ok(self
            .storage
            .memberships(user)?
            .into_iter()
            .filter(|(_, record)| record.membership == "join")
            .map(|(room, _)| room)
            .collect())
    }

    /// After a display name or avatar change: a new member event in every joined room, as the
    /// spec asks, so others see the change.
    pub async fn profile_changed(&self, user: &UserId) -> Result<()> {
        for room_id in self.joined_rooms(user)? {
            let (_guard, mut room) = self.lock(&room_id).await?;
            let Some(current) = self.state_event(&room.state, "m.room.member", user.as_str())? else { continue };
            let mut content = current.content_map();
            for field in ["displayname", "avatar_url"] {
                match self.storage.profile_field(user, field)? {
                    Some(value) => content.insert(field.into(), value),
                    None => content.remove(field),
                };
            }
            content.insert("membership".into(), json!("join"));
            let draft = EventDraft::state("m.room.member", user.as_str(), super::canonical_content(content)?);
            if let Err(e) = self.append(&mut room, user, draft, None).await {
                tracing::warn!(room = %room_id, error = %e, "updating a member event after a profile change failed");
            }
        }
        Ok(())
    }

    /// Leaves every room and declines every invite (on deactivation).
    pub async fn leave_all(&self, user: &UserId) -> Result<()> {
        for (room_id, record) in self.storage.memberships(user)? {
            if matches!(record.membership.as_str(), "join" | "invite" | "knock")
                && let Err(e) = self.change_membership(&room_id, user, MembershipChange::Leave { reason: None }).await
            {
                tracing::warn!(room = %room_id, error = %e, "leaving a room on deactivation failed");
            }
        }
        Ok(())
    }
}

fn with_reason(content: &mut Map<String, Value>, reason: Option<String>) -> &mut Map<String, Value> {
    if let Some(reason) = reason {
        content.insert("reason".into(), json!(reason));
    }
    content
}
