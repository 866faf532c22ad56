//! State resolution: when the states before an event (or after the room's forward extremities)
//! differ, ruma's state resolution v2 (`ruma::state_res::resolve`) decides the state. This module
//! translates between our short-ID states and ruma's `(type, state_key) → event ID` maps and
//! gives ruma the auth chains and, for room version 12, the conflicted state subgraph.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::{AuthorizationRules, StateResolutionV2Rules},
    state_res::{StateMap as RumaStateMap, utils::event_id_set::EventIdSet},
};

use super::{Pdu, RoomHandle, Rooms, StateMap};
use crate::error::{Error, Result};

/// Walks of the auth graph beyond this many events are cut (a bound on work per resolution).
const MAX_AUTH_WALK: usize = 200_000;

impl Rooms {
    /// Resolves several states of a room into one.
    pub(super) fn resolve_states(&self, room: &RoomHandle, states: &[&StateMap]) -> Result<StateMap> {
        let fetch = |id: &EventId| self.handle_event(room, id).ok().flatten();
        let mut keys: HashMap<u64, (StateEventType, String)> = HashMap::new();
        let mut short_keys: HashMap<(StateEventType, String), u64> = HashMap::new();
        let mut short_events: HashMap<OwnedEventId, u64> = HashMap::new();
        let mut maps: Vec<RumaStateMap<OwnedEventId>> = Vec::with_capacity(states.len());
        for state in states {
            let mut map = RumaStateMap::with_capacity(state.len());
            for (short_key, short_event) in state.iter() {
                let key = match keys.get(short_key) {
                    Some(key) => key.clone(),
                    None => {
                        let (kind, state_key) = self
                            .storage
                            .state_key_pair(*short_key)?
                            .ok_or_else(|| Error::internal(format!("unknown state key {short_key}")))?;
                        let key = (StateEventType::from(kind), state_key);
                        keys.insert(*short_key, key.clone());
                        short_keys.insert(key.clone(), *short_key);
                        key
                    }
                };
                let Some(event) = self.event_staged(room, *short_event)? else { continue };
                short_events.insert(event.event_id.clone(), *short_event);
                map.insert(key, event.event_id.clone());
            }
            maps.push(map);
        }

        let rules = room.rules.state_res.v2_rules().copied().unwrap_or(StateResolutionV2Rules::V2_0);
        let resolved = resolve_maps(&room.rules.authorization, &rules, &maps, &fetch)
            .map_err(|e| Error::internal(format!("state resolution in {}: {e}", room.room_id)))?;

        let mut state = StateMap::with_capacity(resolved.len());
        for (key, event_id) in resolved {
            let short_key = match short_keys.get(&key) {
                Some(short) => *short,
                None => self
                    .storage
                    .short_state_key(&key.0.to_string(), &key.1)?
                    .ok_or_else(|| Error::internal("state resolution chose an unknown state key"))?,
            };
            let short_event = match short_events.get(&event_id) {
                Some(short) => *short,
                None => match room.pending.get(&event_id) {
                    Some(pending) => pending.short,
                    None => self
                        .storage
                        .short_event_id(&event_id)?
                        .ok_or_else(|| Error::internal("state resolution chose an unknown event"))?,
                },
            };
            state.insert(short_key, short_event);
        }
        Ok(state)
    }
}

/// ruma's resolution of `maps`, given the auth chains and (room version 12) the conflicted state
/// subgraph computed here from the events `fetch` finds.
pub(super) fn resolve_maps(
    auth_rules: &AuthorizationRules,
    rules: &StateResolutionV2Rules,
    maps: &[RumaStateMap<OwnedEventId>],
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> std::result::Result<RumaStateMap<OwnedEventId>, ruma::state_res::Error> {
    let mut chains = AuthChains::default();
    let auth_chains: Vec<EventIdSet<OwnedEventId>> =
        maps.iter().map(|map| chains.union_of(map.values(), fetch)).collect();
    ruma::state_res::resolve(auth_rules, rules, maps, auth_chains, fetch, |conflicted| {
        Some(conflicted_subgraph(conflicted, fetch))
    })
}

/// Auth chains, each event's computed once per resolution.
#[derive(Default)]
struct AuthChains {
    of: HashMap<OwnedEventId, Arc<HashSet<OwnedEventId>>>,
}

impl AuthChains {
    /// Every event the given events' auth events lead to (the events themselves excluded).
    fn union_of<'a>(
        &mut self,
        events: impl Iterator<Item = &'a OwnedEventId>,
        fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
    ) -> EventIdSet<OwnedEventId> {
        let mut union = EventIdSet::new();
        for event in events {
            for id in self.chain(event, fetch).iter() {
                union.insert(id.clone());
            }
        }
        union
    }

    fn chain(&mut self, event: &EventId, fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>) -> Arc<HashSet<OwnedEventId>> {
        if let Some(chain) = self.of.get(event) {
            return chain.clone();
        }
        let chain = Arc::new(auth_chain(std::iter::once(event.to_owned()), fetch));
        self.of.insert(event.to_owned(), chain.clone());
        chain
    }
}

/// The auth chain of some events: every event their `auth_events` lead to, recursively (the
/// starting events excluded unless another leads to them). Unknown events end a walk.
pub fn auth_chain(
    start: impl Iterator<Item = OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let mut chain = HashSet::new();
    let mut stack: Vec<OwnedEventId> =
        start.filter_map(|id| fetch(&id)).flat_map(|pdu| pdu.auth_events.clone()).collect();
    while let Some(id) = stack.pop() {
        if chain.len() >= MAX_AUTH_WALK {
            break;
        }
        if !chain.insert(id.clone()) {
            continue;
        }
        if let Some(pdu) = fetch(&id) {
            stack.extend(pdu.auth_events.iter().filter(|a| !chain.contains(*a)).cloned());
        }
    }
    chain
}

/// The conflicted state subgraph (room version 12): the events on auth-event paths from one
/// conflicted event to another. `None` from ruma's point of view never happens: unknown events
/// end a path.
fn conflicted_subgraph(
    conflicted: &RumaStateMap<Vec<OwnedEventId>>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    // Every event reachable from a conflicted event (through auth events), with its parents.
    let mut parents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut stack: Vec<OwnedEventId> = conflicted.iter().cloned().collect();
    while let Some(id) = stack.pop() {
        if parents.contains_key(&id) || parents.len() >= MAX_AUTH_WALK {
            continue;
        }
        let auth = fetch(&id).map(|pdu| pdu.auth_events.clone()).unwrap_or_default();
        stack.extend(auth.iter().cloned());
        parents.insert(id, auth);
    }
    // Whether a conflicted event is reachable from each event by a path of one step or more.
    let mut leads_to_conflicted: HashMap<OwnedEventId, bool> = HashMap::new();
    fn leads(
        id: &OwnedEventId,
        parents: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
        conflicted: &HashSet<OwnedEventId>,
        memo: &mut HashMap<OwnedEventId, bool>,
    ) -> bool {
        // Iterative post-order, as auth chains can be deep.
        let mut work = vec![(id.clone(), false)];
        while let Some((current, expanded)) = work.pop() {
            if memo.contains_key(&current) {
                continue;
            }
            let auth = parents.get(&current).cloned().unwrap_or_default();
            if expanded {
                let result = auth.iter().any(|a| conflicted.contains(a) || memo.get(a).copied().unwrap_or(false));
                memo.insert(current, result);
            } else {
                work.push((current, true));
                work.extend(auth.into_iter().filter(|a| !memo.contains_key(a)).map(|a| (a, false)));
            }
        }
        memo.get(id).copied().unwrap_or(false)
    }
    let mut reached_from_conflicted: HashSet<OwnedEventId> = HashSet::new();
    for auth in conflicted.iter().filter_map(|c| parents.get(c)) {
        let mut stack = auth.clone();
        while let Some(id) = stack.pop() {
            if reached_from_conflicted.insert(id.clone())
                && let Some(next) = parents.get(&id)
            {
                stack.extend(next.iter().cloned());
            }
        }
    }
    let mut subgraph = EventIdSet::new();
    for id in parents.keys() {
        let below = leads(id, &parents, &conflicted, &mut leads_to_conflicted);
        let above = reached_from_conflicted.contains(id);
        let is_conflicted = conflicted.contains(id);
        // On a path of at least one step from a conflicted event to another: a conflicted event
        // with a conflicted event above or below it, any other event with both.
        let on_path = if is_conflicted { above || below } else { above && below };
        if on_path {
            subgraph.insert(id.clone());
        }
    }
    subgraph
}

#[cfg(test)]
mod tests;
