//! `/sync`: what changed for a user since a token, or everything for a first sync.
//!
//! A sync first subscribes to the user's wake-ups, then reads the stream position it will answer
//! up to (`next_batch`), then builds the answer from storage for that position. If the answer is
//! empty and the client is willing to wait, it waits for a wake-up and builds again. Anything that
//! lands after the subscription wakes it, so nothing is missed and nothing polls.

pub mod lazy;
pub mod token;

use std::{cell::RefCell, collections::BTreeSet, time::Duration};

use ruma::{OwnedUserId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Map, Value, json};
pub use token::SyncToken;

use super::{
    Services,
    accounts::Session,
    filters::{Filter, RoomEventFilter},
    presence,
    push_rules::PUSH_RULES,
    rooms::{Counts, SeeMemo, StateMap, read::Viewer},
};
use crate::{
    error::Result,
    storage::{MembershipRecord, RoomRecord},
};

/// Timeline events per room when the filter gives no limit (Synapse's default too).
const DEFAULT_TIMELINE_LIMIT: usize = 10;
const MAX_TIMELINE_LIMIT: usize = 1000;
/// Longest wait a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// State events shown for a room one is invited to (or has knocked on), as Synapse's default.
const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.name",
    "m.room.encryption",
    "m.room.topic",
];

#[derive(Clone, Debug, Default)]
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub filter: Filter,
    pub full_state: bool,
    pub timeout: Duration,
    /// `None`: online, as by default.
    pub set_presence: Option<presence::State>,
}

/// Answers a sync, waiting up to the request's timeout for something to answer with.
pub async fn sync(
    services: &Services,
    session: &Session,
    request: &SyncRequest,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
    let mut wake = services.notifier.subscribe(&session.user_id);
    let (_syncing, changed) = services.presence.open_sync(&session.user_id, request.set_presence);
    if changed {
        services.notify_peers(&session.user_id);
    }
    loop {
        wake.borrow_and_update();
        let may_wait = request.since.is_some() && !request.full_state && !*shutdown.borrow();
        // Nothing at all happened since `since`: the answer would be empty, so wait before
        // building it. This is the common case of a client's next long-poll right after an
        // answer, and it would otherwise cost a whole build for every wake-up.
        if may_wait && nothing_since(services, request.since) && tokio::time::Instant::now() < deadline {
            tokio::select! {
                changed = wake.changed() => if changed.is_ok() { continue },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
        let (response, has_updates) = build(services, session, request).await?;
        let may_wait = request.since.is_some() && !request.full_state && !*shutdown.borrow();
        if has_updates || !may_wait || tokio::time::Instant::now() >= deadline {
            return Ok(response);
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return Ok(response) },
            _ = tokio::time::sleep_until(deadline) => return Ok(response),
            _ = shutdown.changed() => return Ok(response),
        }
    }
}

/// Whether the stream and the ephemeral serial stand exactly where `since` left them (and no
/// to-device messages were held back): then no sync from `since` has anything to say. Both
/// counters are server-wide, so this may say no when nothing concerns the user, never yes when
/// something does.
fn nothing_since(services: &Services, since: Option<SyncToken>) -> bool {
    since.is_some_and(|since| {
        since.to_device.is_none()
            && since.position == services.storage.stream_position()
            && since.serial == services.serial.current()
    })
}

/// Builds the answer for the stream as it is now; says whether it carries anything.
pub async fn build(services: &Services, session: &Session, request: &SyncRequest) -> Result<(Value, bool)> {
    let mut now = SyncToken::new(services.storage.stream_position(), services.serial.current());
    if request.since.is_none() {
        // A new sync sequence: the client remembers no members.
        services.lazy_members.reset(&session.user_id, &session.device_id);
    }
    let builder = Builder {
        services,
        session,
        request,
        now,
        since: request.since.map_or(0, |s| s.position),
        newly_shared: RefCell::default(),
    };
    let (mut response, mut has_updates) = builder.build()?;

    // Send-to-device messages: those of the previous sync are acknowledged now and deleted.
    let acknowledged = request.since.map_or(0, |s| s.to_device_position());
    let (to_device, cut) =
        services.to_device.take(&session.user_id, &session.device_id, acknowledged, now.position).await?;
    if cut.is_some() {
        now.to_device = cut;
        response["next_batch"] = json!(now.to_string());
    }
    has_updates |= !to_device.is_empty();
    response["to_device"] = json!({ "events": to_device });

    // End-to-end encryption: whose devices to refetch (incremental syncs only), and this
    // device's key supplies.
    let (user, device) = (&session.user_id, &session.device_id);
    if let Some(since) = request.since {
        let (changed, left) = services.device_lists.changes(&services.rooms, user, since.position, now.position)?;
        has_updates |= !changed.is_empty() || !left.is_empty();
        response["device_lists"] = json!({ "changed": changed, "left": left });
    }
    response["device_one_time_keys_count"] = json!(services.e2ee.one_time_key_counts(user, device)?);
    response["device_unused_fallback_key_types"] = json!(services.e2ee.unused_fallback_key_types(user, device)?);
    Ok((response, has_updates))
}

struct Builder<'a> {
    services: &'a Services,
    session: &'a Session,
    request: &'a SyncRequest,
    now: SyncToken,
    /// Position of `since`, 0 for an initial sync.
    since: u64,
    /// Users who came to share a joined room with the user since `since` (found while the rooms
    /// are built): their presence is news to the client even when it did not change.
    newly_shared: RefCell<BTreeSet<OwnedUserId>>,
}

impl Builder<'_> {
    fn user(&self) -> &UserId {
        &self.session.user_id
    }

    fn initial(&self) -> bool {
        self.request.since.is_none()
    }

    fn build(&self) -> Result<(Value, bool)> {
        let filter = &self.request.filter;
        let (mut join, mut invite, mut leave, mut knock) = (Map::new(), Map::new(), Map::new(), Map::new());
        let ignored = self.ignored_users()?;
        for (room_id, record) in self.services.storage.memberships(self.user())? {
            // Changes after the position we answer for come in the next sync.
            if record.position > self.now.position || !filter.room.allows_room(&room_id) {
                continue;
            }
            let changed = self.initial() || record.position > self.since;
            // A forgotten room is gone from syncs, except for the leave itself when it is news:
            // the client's other devices learn that way that the room was left.
            if record.forgotten && (self.initial() || !changed) {
                continue;
            }
            match record.membership.as_str() {
                "join" => {
                    if let Some(room) = self.joined_or_left(&room_id, &record, self.now.position)? {
                        join.insert(room_id.to_string(), room);
                    }
                }
                // Invites from ignored users are never sent (they stay pending, unseen).
                "invite" if changed && !self.invited_by(&record, &ignored)? => {
                    invite.insert(
                        room_id.to_string(),
                        json!({ "invite_state": { "events": self.stripped_state(&room_id, &record)? } }),
                    );
                }
                "knock" if changed => {
                    knock.insert(
                        room_id.to_string(),
                        json!({ "knock_state": { "events": self.stripped_state(&room_id, &record)? } }),
                    );
                }
                "leave" | "ban" if (self.initial() && filter.room.include_leave) || (!self.initial() && changed) => {
                    if let Some(room) = self.joined_or_left(&room_id, &record, record.position)? {
                        leave.insert(room_id.to_string(), room);
                    }
                }
                _ => {}
            }
        }
        let account_data = self.global_account_data()?;
        let presence = self.presence()?;
        let has_updates = !(join.is_empty()
            && invite.is_empty()
            && leave.is_empty()
            && knock.is_empty()
            && account_data.is_empty()
            && presence.is_empty());
        let response = json!({
            "next_batch": self.now.to_string(),
            "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
            "account_data": { "events": account_data },
            "presence": { "events": presence },
            "to_device": { "events": [] },
            "device_lists": { "changed": [], "left": [] },
        });
        Ok((response, has_updates))
    }

    /// A joined room (up to now) or a left one (up to the departure): timeline, state, account
    /// data, summary. `None` when nothing changed.
    fn joined_or_left(&self, room_id: &RoomId, membership: &MembershipRecord, until: u64) -> Result<Option<Value>> {
        let rooms = &self.services.rooms;
        let Some(room) = rooms.room(room_id)? else { return self.declined_remote_invite(membership) };
        // A room the user was not in at `since` (joined since, or left after an invite) is new to
        // the client: it gets it whole. One the user was in gets what changed, even when the user
        // has left it since (the leave is in the timeline).
        let newly_joined = !self.initial() && membership.position > self.since && !self.was_joined_at_since(room_id)?;
        let whole = self.initial() || self.request.full_state || newly_joined;
        if !whole && self.quiet(room_id, &room, until)? {
            return Ok(None);
        }
        let filter = &self.request.filter.room;
        let timeline = self.timeline(
            room_id,
            &room,
            if whole && self.initial() { 0 } else { self.since },
            until,
            &filter.timeline,
        )?;
        let timeline_start = timeline.first_position;

        // State: all of it at the timeline's start for a room new to the client; otherwise what
        // changed between `since` and the timeline's start (nothing unless the timeline is
        // limited).
        // Most syncs follow messages only: the state is then the same at both ends, read once.
        let unchanged = !whole && rooms.state_unchanged_since(room.short_id, self.since);
        if membership.membership == "join" && (newly_joined || (!self.initial() && !unchanged)) {
            self.note_newly_shared(room_id, &room, newly_joined)?;
        }
        let at_start = match timeline_start {
            _ if unchanged => rooms.state_at_position(room_id, until)?,
            Some(position) => rooms.state_at_position(room_id, position - 1)?,
            None => rooms.state_at_position(room_id, until)?,
        };
        let state = if whole {
            self.state_events(&at_start, None, &filter.state, &timeline.senders)?
        } else {
            let at_since = if unchanged { at_start.clone() } else { rooms.state_at_position(room_id, self.since)? };
            let mut state = self.state_events(&at_start, Some(&at_since), &filter.state, &timeline.senders)?;
            if filter.state.lazy_load_members {
                state.extend(self.unsent_members(room_id, &at_start, &at_since, &filter.state, &timeline.senders)?);
            }
            state
        };
        if filter.state.lazy_load_members {
            let sent = state.iter().chain(&timeline.events).filter(|e| e["type"] == "m.room.member");
            let sent = sent.filter_map(|e| Some((e["state_key"].as_str()?, e["event_id"].as_str()?)));
            self.services.lazy_members.record(self.user(), &self.session.device_id, room_id, sent, self.now.position);
        }

        let account_data = self.room_account_data(room_id, whole, &filter.account_data)?;
        let ephemeral =
            if membership.membership == "join" { self.ephemeral(room_id, &room, whole)? } else { Vec::new() };
        let membership_changed =
            whole || timeline.has_member_events || state.iter().any(|e| e["type"] == "m.room.member");
        if !whole && timeline.events.is_empty() && state.is_empty() && account_data.is_empty() && ephemeral.is_empty() {
            return Ok(None);
        }
        let unread = rooms.unread_counts(room_id, room.short_id, self.user(), until)?;
        // With `unread_thread_notifications`, threads are counted apart from the main timeline.
        let by_thread = filter.timeline.unread_thread_notifications;
        let counts_json = |counts: Counts| json!({ "notification_count": counts.notifications, "highlight_count": counts.highlights });
        // Assembled by moving the events in (`json!` would copy each of them).
        let events = |events: Vec<Value>| Value::Object(Map::from_iter([("events".to_owned(), Value::Array(events))]));
        let mut timeline_body = Map::new();
        timeline_body.insert("events".into(), Value::Array(timeline.events));
        timeline_body.insert("limited".into(), Value::Bool(timeline.limited));
        timeline_body.insert("prev_batch".into(), Value::String(timeline.prev_batch));
        let mut body = Value::Object(Map::from_iter([
            ("timeline".to_owned(), Value::Object(timeline_body)),
            ("state".to_owned(), events(state)),
            ("account_data".to_owned(), events(account_data)),
            ("ephemeral".to_owned(), events(ephemeral)),
            ("unread_notifications".to_owned(), counts_json(if by_thread { unread.main } else { unread.total() })),
        ]));
        if by_thread && !unread.threads.is_empty() {
            let threads = unread.threads.iter().map(|(root, counts)| (root.clone(), counts_json(*counts))).collect();
            body["unread_thread_notifications"] = Value::Object(threads);
        }
        if membership_changed {
            body["summary"] = self.summary(&room)?;
        }
        Ok(Some(body))
    }

    /// Whether nothing that an incremental sync shows of a room happened in `(since, until]`: no
    /// timeline entry (so no state change either), no receipt, no typing change, no room account
    /// data. Cheap checks, before any state is looked up: most rooms are quiet in most syncs.
    fn quiet(&self, room_id: &RoomId, room: &RoomRecord, until: u64) -> Result<bool> {
        let storage = &self.services.storage;
        if self.services.rooms.has_events_between(room.short_id, self.since, until)? {
            return Ok(false);
        }
        let (_, typing_changed) = self.services.typing.in_room(room_id);
        if typing_changed > self.request.since.map_or(0, |s| s.serial) {
            return Ok(false);
        }
        if !storage.receipt_changes(room.short_id, self.since, self.now.position)?.is_empty() {
            return Ok(false);
        }
        let changes = storage.account_data_changes(self.user(), self.since, self.now.position)?;
        Ok(!changes.iter().any(|change| change.room.as_deref() == Some(room_id)))
    }

    /// The room's events in `(after, until]` that the user may see and the filter lets through,
    /// the latest `limit` of them.
    fn timeline(
        &self,
        room_id: &RoomId,
        room: &RoomRecord,
        after: u64,
        until: u64,
        filter: &RoomEventFilter,
    ) -> Result<Timeline> {
        let rooms = &self.services.rooms;
        let storage = &self.services.storage;
        // `limit: 0` asks for no events, only the state (and `prev_batch` to page back from).
        let limit =
            if filter.limit == Some(0) { 0 } else { filter.limit_or(DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT) };
        let viewer = Viewer { user: self.user(), device: Some(&self.session.device_id) };
        let mut picked = Vec::new();
        let mut memo = SeeMemo::default();
        let mut before = until.saturating_add(1);
        let mut limited = false;
        'scan: loop {
            // Reading back is slow in RocksDB's memtable: no more than the limit needs (one
            // more tells whether the timeline is limited) unless events are filtered out.
            let chunk = storage.timeline_rev(room.short_id, after, before, (limit + 1).min(64))?;
            let Some(&(oldest, _)) = chunk.last() else { break };
            for (position, short) in chunk {
                let Some(event) = rooms.cached_event(short)? else { continue };
                if !filter.allows_pdu(&event.pdu, room_id) {
                    continue;
                }
                let snapshots = rooms.event_snapshots(short)?;
                if !rooms.can_see_in(&mut memo, self.user(), room_id, snapshots, &event.pdu, position)? {
                    continue;
                }
                if picked.len() == limit {
                    limited = true;
                    break 'scan;
                }
                picked.push((position, event, snapshots.1));
            }
            before = oldest;
        }
        picked.reverse();
        let first_position = picked.first().map(|(position, ..)| *position);
        let mut senders = BTreeSet::new();
        let mut has_member_events = false;
        let mut events = Vec::with_capacity(picked.len());
        for (_, event, after) in &picked {
            senders.insert(event.pdu.sender.clone());
            has_member_events |= event.pdu.kind == TimelineEventType::RoomMember;
            events.push(rooms.timeline_event_in(&mut memo, event, *after, viewer)?.without_room_id().into_value()?);
        }
        let prev_batch = SyncToken::new(first_position.map_or(until, |p| p - 1), self.now.serial);
        Ok(Timeline { events, limited, prev_batch: prev_batch.to_string(), first_position, senders, has_member_events })
    }

    /// State events of `state` (only those that differ from `since` when given), filtered; with
    /// lazy-loading, members only for the timeline's senders and the user.
    fn state_events(
        &self,
        state: &StateMap,
        since: Option<&StateMap>,
        filter: &RoomEventFilter,
        timeline_senders: &BTreeSet<OwnedUserId>,
    ) -> Result<Vec<Value>> {
        let rooms = &self.services.rooms;
        let mut events = Vec::new();
        for (short_key, short_event) in state {
            if since.is_some_and(|old| old.get(short_key) == Some(short_event)) {
                continue;
            }
            let Some(event) = rooms.cached_event(*short_event)? else { continue };
            let pdu = &event.pdu;
            let kind = pdu.kind.to_string();
            if kind == "m.room.member" && filter.lazy_load_members {
                let member = pdu.state_key.as_deref().unwrap_or_default();
                let wanted = member == self.user().as_str() || timeline_senders.iter().any(|s| s.as_str() == member);
                if !wanted {
                    continue;
                }
            }
            let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            if filter.allows(&kind, &pdu.sender, &pdu.room_id, &content) {
                events.push(without_room_id(rooms.client_event_cached(&event, None)?));
            }
        }
        Ok(events)
    }

    /// With lazy-loading on an incremental sync: the members of the timeline's senders that did
    /// not change since `since` (changes are in the state already) and that the device was not
    /// sent yet, or all of them with `include_redundant_members`.
    fn unsent_members(
        &self,
        room_id: &RoomId,
        at_start: &StateMap,
        at_since: &StateMap,
        filter: &RoomEventFilter,
        timeline_senders: &BTreeSet<OwnedUserId>,
    ) -> Result<Vec<Value>> {
        let (storage, rooms) = (&self.services.storage, &self.services.rooms);
        let mut events = Vec::new();
        for sender in timeline_senders {
            let Some(short_key) = storage.short_state_key("m.room.member", sender.as_str())? else { continue };
            let Some(short_event) = at_start.get(&short_key) else { continue };
            if at_since.get(&short_key) != Some(short_event) {
                continue;
            }
            let Some(event) = rooms.cached_event(*short_event)? else { continue };
            let pdu = &event.pdu;
            let known = || {
                let device = &self.session.device_id;
                let event_id = pdu.event_id.as_str();
                self.services.lazy_members.known(self.user(), device, room_id, sender.as_str(), event_id, self.since)
            };
            let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            if (filter.include_redundant_members || !known())
                && filter.allows("m.room.member", &pdu.sender, room_id, &content)
            {
                events.push(without_room_id(rooms.client_event_cached(&event, None)?));
            }
        }
        Ok(events)
    }

    /// Typing and receipts in a joined room: all of them for a room new to the client, what
    /// changed otherwise.
    fn ephemeral(&self, room_id: &RoomId, room: &RoomRecord, whole: bool) -> Result<Vec<Value>> {
        let filter = &self.request.filter.room.ephemeral;
        let since_serial = if whole { 0 } else { self.request.since.map_or(0, |s| s.serial) };
        let mut events = Vec::new();
        let (typing, changed) = self.services.typing.in_room(room_id);
        let typing_news = changed > since_serial && (!whole || !typing.is_empty());
        if typing_news && filter.allows("m.typing", self.user(), room_id, &Value::Null) {
            events.push(json!({ "type": "m.typing", "content": { "user_ids": typing } }));
        }
        let since = (!whole).then_some(self.since);
        if filter.allows("m.receipt", self.user(), room_id, &Value::Null)
            && let Some(receipts) =
                self.services.rooms.receipts_for(room.short_id, self.user(), since, self.now.position)?
        {
            events.push(receipts);
        }
        Ok(events)
    }

    /// Records the members of a joined room who were not joined to it at `since`: all of them
    /// when the user joined it since, otherwise those whose membership event changed since and
    /// is now a join (only the state entries that differ are read).
    fn note_newly_shared(&self, room_id: &RoomId, room: &RoomRecord, newly_joined: bool) -> Result<()> {
        let rooms = &self.services.rooms;
        let mut shared = self.newly_shared.borrow_mut();
        if newly_joined {
            let members = self.services.storage.members(room.short_id)?.into_iter();
            shared.extend(members.filter(|(member, m)| m == "join" && member != self.user()).map(|(member, _)| member));
            return Ok(());
        }
        let before = rooms.state_at_position(room_id, self.since)?;
        for (short_key, short_event) in rooms.current_state(room)?.iter() {
            if before.get(short_key) == Some(short_event) {
                continue;
            }
            let Some(event) = rooms.cached_event(*short_event)? else { continue };
            let pdu = &event.pdu;
            let Some(member) = pdu.state_key.as_deref().filter(|_| pdu.kind == TimelineEventType::RoomMember) else {
                continue;
            };
            let Ok(member) = UserId::parse(member) else { continue };
            if member != self.user()
                && pdu.content_str("membership").as_deref() == Some("join")
                && rooms.membership_in(&before, &member)?.as_deref() != Some("join")
            {
                shared.insert(member);
            }
        }
        Ok(())
    }

    /// Presence of users who share a room with the syncing user (and theirs): what changed since
    /// the token's serial, and the current presence of those who newly share a room with them.
    fn presence(&self) -> Result<Vec<Value>> {
        let filter = &self.request.filter.presence;
        let since = self.request.since.map_or(0, |s| s.serial);
        let changed = self.services.presence.changed_since(since);
        let newly_shared = self.newly_shared.borrow();
        let mut events = Vec::new();
        let mut event = |user: &UserId, content: Value| {
            if filter.allows("m.presence", Some(user)) {
                events.push(json!({ "type": "m.presence", "sender": user, "content": content }));
            }
        };
        if !changed.is_empty() {
            let mine: BTreeSet<_> = self.services.rooms.joined_rooms(self.user())?.into_iter().collect();
            for (user, content) in &changed {
                let shares = user == self.user()
                    || newly_shared.contains(user)
                    || self.services.rooms.joined_rooms(user)?.iter().any(|room| mine.contains(room));
                if shares {
                    event(user, content.clone());
                }
            }
        }
        for user in newly_shared.iter().filter(|user| !changed.iter().any(|(changed, _)| changed == *user)) {
            if let Some(content) = self.services.presence.known(user) {
                event(user, content);
            }
        }
        Ok(events)
    }

    /// `m.heroes` and member counts, for clients to name rooms without names.
    fn summary(&self, room: &RoomRecord) -> Result<Value> {
        let members = self.services.storage.members(room.short_id)?;
        let count = |m: &str| members.iter().filter(|(_, membership)| membership == m).count();
        let mut heroes: Vec<&OwnedUserId> = members
            .iter()
            .filter(|(user, membership)| user != self.user() && matches!(membership.as_str(), "join" | "invite"))
            .map(|(user, _)| user)
            .collect();
        heroes.sort();
        heroes.truncate(5);
        Ok(json!({
            "m.heroes": heroes,
            "m.joined_member_count": count("join"),
            "m.invited_member_count": count("invite"),
        }))
    }

    /// Whether the user was joined to the room at `since`.
    fn was_joined_at_since(&self, room_id: &RoomId) -> Result<bool> {
        let rooms = &self.services.rooms;
        let state = rooms.state_at_position(room_id, self.since)?;
        Ok(rooms.membership_in(&state, self.user())?.as_deref() == Some("join"))
    }

    /// The users in the user's `m.ignored_user_list`.
    fn ignored_users(&self) -> Result<BTreeSet<String>> {
        let record = self.services.storage.account_data(self.user(), None, "m.ignored_user_list")?;
        let users = record.as_ref().and_then(|r| r.content.get("ignored_users")).and_then(Value::as_object);
        Ok(users.map(|users| users.keys().cloned().collect()).unwrap_or_default())
    }

    /// Whether the invite of `membership` was sent by one of `users`.
    fn invited_by(&self, membership: &MembershipRecord, users: &BTreeSet<String>) -> Result<bool> {
        if users.is_empty() {
            return Ok(false);
        }
        let invite = self.services.rooms.event_by_id(&membership.event_id)?;
        Ok(invite.is_some_and(|(_, pdu)| users.contains(pdu.sender.as_str())))
    }

    /// An invite to a room this server is not in, declined: the leave event alone, so that the
    /// client drops the invite.
    fn declined_remote_invite(&self, membership: &MembershipRecord) -> Result<Option<Value>> {
        let Some(stored) = self.services.storage.event_by_id(&membership.event_id)? else { return Ok(None) };
        let event = without_room_id(self.services.rooms.client_event(&stored, None)?);
        Ok(Some(json!({
            "timeline": { "events": [event], "limited": false },
            "state": { "events": [] },
            "account_data": { "events": [] },
        })))
    }

    /// A few state events of a room one is invited to or knocks on, and one's own member event.
    fn stripped_state(&self, room_id: &RoomId, membership: &MembershipRecord) -> Result<Vec<Value>> {
        let rooms = &self.services.rooms;
        // Invited by another server to a room we are not in: the state it sent.
        if let Some(invite) = self.services.storage.remote_invite(self.user(), room_id)?
            && invite.event_id == membership.event_id
        {
            return Ok(invite.invite_state);
        }
        let Some(room) = rooms.room(room_id)? else { return Ok(Vec::new()) };
        let state = rooms.current_state(&room)?;
        let mut events = Vec::new();
        for kind in STRIPPED_STATE {
            if let Some(pdu) = rooms.state_event(&state, kind, "")? {
                events.push(stripped(&pdu));
            }
        }
        if let Some((_, pdu)) = rooms.event_by_id(&membership.event_id)? {
            events.push(stripped(&pdu));
        }
        Ok(events)
    }

    fn global_account_data(&self) -> Result<Vec<Value>> {
        let filter = &self.request.filter.account_data;
        let storage = &self.services.storage;
        let kinds: Vec<(String, Value)> = if self.initial() {
            // Push rules always, as Synapse sends them: the defaults until the user changes one.
            let rules = self.services.account_data.push_rules_json(self.user())?;
            let mut kinds = vec![(PUSH_RULES.to_owned(), json!({ "global": rules }))];
            for (kind, record) in storage.all_account_data(self.user(), None)? {
                if kind != PUSH_RULES {
                    kinds.push((kind, record.content));
                }
            }
            kinds
        } else {
            let mut kinds = Vec::new();
            for change in storage.account_data_changes(self.user(), self.since, self.now.position)? {
                if change.room.is_none()
                    && !kinds.iter().any(|(k, _): &(String, Value)| *k == change.kind)
                    && let Some(record) = storage.account_data(self.user(), None, &change.kind)?
                {
                    kinds.push((change.kind, record.content));
                }
            }
            kinds
        };
        Ok(kinds
            .into_iter()
            .filter(|(kind, _)| filter.allows(kind, None))
            .map(|(kind, content)| json!({ "type": kind, "content": content }))
            .collect())
    }

    fn room_account_data(&self, room_id: &RoomId, whole: bool, filter: &RoomEventFilter) -> Result<Vec<Value>> {
        let storage = &self.services.storage;
        let mut kinds: Vec<(String, Value)> = Vec::new();
        if whole {
            for (kind, record) in storage.all_account_data(self.user(), Some(room_id))? {
                kinds.push((kind, record.content));
            }
        } else {
            for change in storage.account_data_changes(self.user(), self.since, self.now.position)? {
                if change.room.as_deref() == Some(room_id)
                    && !kinds.iter().any(|(k, _)| *k == change.kind)
                    && let Some(record) = storage.account_data(self.user(), Some(room_id), &change.kind)?
                {
                    kinds.push((change.kind, record.content));
                }
            }
        }
        Ok(kinds
            .into_iter()
            .filter(|(kind, _)| filter.allows(kind, self.user(), room_id, &Value::Null))
            .map(|(kind, content)| json!({ "type": kind, "content": content }))
            .collect())
    }
}

struct Timeline {
    events: Vec<Value>,
    limited: bool,
    prev_batch: String,
    first_position: Option<u64>,
    senders: BTreeSet<OwnedUserId>,
    has_member_events: bool,
}

/// Events inside a room's section do not repeat the room's ID.
fn without_room_id(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.remove("room_id");
    }
    event
}

fn stripped(pdu: &super::rooms::Pdu) -> Value {
    json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key,
        "content": serde_json::from_str::<Value>(pdu.content.get()).unwrap_or_default(),
        "sender": pdu.sender,
    })
}
