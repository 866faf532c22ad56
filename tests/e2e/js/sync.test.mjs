// The SDK's real sync loop (startClient) against a real Myelin: two users exchange 200 messages each
// way while both sync, and each must see all 400 through Room.timeline, once each, in the order
// /messages gives; typing and read receipts travel through sync; a restarted client (from its stored
// sync token, or fresh) gets the history complete. Every wait has a deadline and says what is missing.
import assert from "node:assert/strict";
import { test } from "node:test";

import "fake-indexeddb/auto"; // a browser's IndexedDB, for the SDK's real IndexedDBStore
import {
    ClientEvent,
    Direction,
    EventType,
    Filter,
    IndexedDBStore,
    MsgType,
    PendingEventOrdering,
    ReceiptType,
    RoomEvent,
    RoomMemberEvent,
    SyncState,
} from "matrix-js-sdk";

import { fresh, useMyelin } from "./helpers.mjs";

const { as, register } = useMyelin();

const EACH = 200; // messages per side
const DEADLINE_MS = 30_000;

// Anything the SDK logs as an error (a sync response it cannot process, a failed request it retries)
// fails the test: it goes through console.error.
const sdkErrors = [];
const consoleError = console.error.bind(console);
console.error = (...args) => {
    sdkErrors.push(args.map((a) => (a instanceof Error ? a.stack : String(a))).join(" "));
    consoleError(...args);
};

/**
 * Resolves once condition() is true, checked now and whenever `event` fires on `emitter`; rejects
 * after `ms` with what() (what is still missing).
 */
function until(emitter, event, condition, what, ms = DEADLINE_MS) {
    return new Promise((resolve, reject) => {
        const finish = () => {
            clearTimeout(timer);
            emitter.off(event, check);
        };
        const timer = setTimeout(() => {
            finish();
            reject(new Error(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`));
        }, ms);
        function check() {
            try {
                if (condition()) {
                    finish();
                    resolve();
                }
            } catch (e) {
                finish();
                reject(e);
            }
        }
        emitter.on(event, check);
        check();
    });
}

/**
 * Starts the SDK's sync loop and waits for PREPARED. Records the sync states, sync errors and the
 * room's live timeline (only events the server sent: with detached pending events, a message of
 * one's own enters the timeline when its remote echo comes down /sync, not when it is sent).
 */
async function startSyncing(client, roomId, options = {}) {
    const synced = { states: [], errors: [], timeline: [], resets: 0 };
    client.on(ClientEvent.Sync, (state, _previous, data) => {
        synced.states.push(state);
        if (state === SyncState.Error || data?.error) synced.errors.push(data?.error ?? state);
    });
    client.on(ClientEvent.SyncUnexpectedError, (error) => synced.errors.push(error));
    client.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
        if (room?.roomId !== roomId || toStartOfTimeline || removed || !data.liveEvent) return;
        assert.equal(event.status, null, `a local echo in the live timeline: ${event.getId()}`);
        synced.timeline.push(event);
    });
    client.on(RoomEvent.TimelineReset, (room) => {
        if (room?.roomId === roomId) synced.resets += 1;
    });
    await client.startClient({ pendingEventOrdering: PendingEventOrdering.Detached, ...options });
    await until(
        client,
        ClientEvent.Sync,
        () => synced.errors.length > 0 || [SyncState.Prepared, SyncState.Syncing].includes(client.getSyncState()),
        () => `sync state PREPARED (states so far: ${synced.states.join(", ") || "none"})`,
    );
    assertSyncHealthy(client, synced);
    return synced;
}

function assertSyncHealthy(client, synced) {
    assert.deepEqual(synced.errors, [], "sync errors");
    assert.deepEqual(sdkErrors, [], "errors logged by the SDK");
    assert.ok(!synced.states.includes(SyncState.Error), `sync states: ${synced.states.join(", ")}`);
    assert.ok(
        [SyncState.Prepared, SyncState.Syncing].includes(client.getSyncState()),
        `sync state ${client.getSyncState()}`,
    );
}

/** A filter whose timeline limit holds everything this test sends, so no sync is limited. */
function roomyFilter(userId) {
    const filter = new Filter(userId);
    filter.setDefinition({ room: { timeline: { limit: 1000 } } });
    return filter;
}

const isMessage = (event) => event.getType() === EventType.RoomMessage;
/** The bodies of SDK events, or of what sendAll returned. */
const bodies = (events) => events.map((e) => (e.getContent ? e.getContent().body : e.body));

/** Every event ID of the room's m.room.message events, oldest first, as /messages pages them. */
async function messagesIds(client, roomId) {
    const ids = [];
    let from = null;
    for (let page = 0; page < 100; page++) {
        const { chunk, end } = await client.createMessagesRequest(roomId, from, 100, Direction.Backward);
        for (const event of chunk) if (event.type === EventType.RoomMessage) ids.push(event.event_id);
        if (!end || chunk.length === 0) return ids.reverse();
        from = end;
    }
    assert.fail("/messages did not reach the start of the room in 100 pages");
}

/** Waits until `synced.timeline` holds every ID of `sent`; says which are missing otherwise. */
async function seesAll(client, synced, sent, who) {
    const have = () => new Set(synced.timeline.map((e) => e.getId()));
    await until(
        client,
        RoomEvent.Timeline,
        () => sent.every((s) => have().has(s.id)),
        () => {
            const missing = sent.filter((s) => !have().has(s.id)).map((s) => s.body);
            return `${who} to see all ${sent.length} messages; ${missing.length} missing: ${missing.slice(0, 10).join(", ")}…`;
        },
    );
}

/** No event twice, each sender's messages in send order, and the same order as /messages. */
function assertTimeline(events, sentBySender, reference, who) {
    const ids = events.filter(isMessage).map((e) => e.getId());
    assert.equal(new Set(ids).size, ids.length, `${who}: an event came twice`);
    for (const [sender, sent] of Object.entries(sentBySender)) {
        const fromSender = events.filter((e) => isMessage(e) && e.getSender() === sender);
        assert.deepEqual(bodies(fromSender), bodies(sent), `${who}: ${sender}'s messages out of order`);
    }
    assert.deepEqual(ids, reference, `${who}: timeline order differs from /messages`);
}

/** Sends `count` messages one after another (each awaited, so the send order is defined). */
async function sendAll(client, roomId, prefix, count, send) {
    const sent = [];
    for (let i = 0; i < count; i++) {
        const body = `${prefix} ${i}`;
        const { event_id } = await send(client, roomId, { msgtype: MsgType.Text, body });
        sent.push({ id: event_id, body });
    }
    return sent;
}
const viaSendMessage = (client, roomId, content) => client.sendMessage(roomId, content);
const viaSendEvent = (client, roomId, content) => client.sendEvent(roomId, EventType.RoomMessage, content);

test("two SDK sync loops exchange 200 messages each way; typing, receipts, restarts", async (t) => {
    const [aliceLogin, bobLogin] = [await register(fresh()), await register(fresh())];
    const dbName = fresh();
    const store = new IndexedDBStore({ indexedDB: globalThis.indexedDB, dbName });
    const alice = as(aliceLogin, { store });
    await store.startup();
    const bob = as(bobLogin);
    const [aliceId, bobId] = [alice.getUserId(), bob.getUserId()];
    const clients = [alice, bob];
    t.after(() => clients.forEach((c) => c.stopClient()));

    const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "Sync room" });
    await bob.joinRoom(roomId);

    const aliceSync = await startSyncing(alice, roomId, { filter: roomyFilter(aliceId) });
    const bobSync = await startSyncing(bob, roomId, { filter: roomyFilter(bobId) });
    assert.ok(alice.getRoom(roomId) && bob.getRoom(roomId), "the room came down the initial sync");

    // 200 each way, both sides at once.
    const started = Date.now();
    const [fromAlice, fromBob] = await Promise.all([
        sendAll(alice, roomId, "alice", EACH, viaSendMessage),
        sendAll(bob, roomId, "bob", EACH, viaSendEvent),
    ]);
    const all = [...fromAlice, ...fromBob];
    await Promise.all([seesAll(alice, aliceSync, all, "alice"), seesAll(bob, bobSync, all, "bob")]);
    t.diagnostic(`${2 * EACH} messages sent and seen by both sync loops in ${Date.now() - started} ms`);

    const reference = await messagesIds(alice, roomId);
    assert.equal(reference.length, 2 * EACH, "/messages has every message once");
    assert.deepEqual(new Set(reference), new Set(all.map((s) => s.id)));
    const sentBySender = { [aliceId]: fromAlice, [bobId]: fromBob };
    assertTimeline(aliceSync.timeline, sentBySender, reference, "alice");
    assertTimeline(bobSync.timeline, sentBySender, reference, "bob");
    // The SDK's own view of the room agrees: the live timeline, unbroken (no limited sync reset it).
    for (const [who, client, synced] of [["alice", alice, aliceSync], ["bob", bob, bobSync]]) {
        assert.equal(synced.resets, 0, `${who}: a limited sync reset the timeline`);
        const live = client.getRoom(roomId).getLiveTimeline().getEvents();
        assertTimeline(live, sentBySender, reference, `${who}'s live timeline`);
        assert.equal(client.getRoom(roomId).getPendingEvents().length, 0, `${who}: messages still pending`);
    }
    // The sends really interleaved (else this is two one-sided tests).
    const senders = reference.map((id) => (fromAlice.some((s) => s.id === id) ? "a" : "b")).join("");
    assert.ok((senders.match(/ab|ba/g) ?? []).length >= 10, `barely interleaved: ${senders}`);

    // Typing, both ways, through RoomMember.typing.
    const typing = (client, userId) => client.getRoom(roomId).getMember(userId)?.typing;
    await alice.sendTyping(roomId, true, 30_000);
    await until(bob, RoomMemberEvent.Typing, () => typing(bob, aliceId) === true, "bob to see alice typing");
    await alice.sendTyping(roomId, false, 0);
    await until(bob, RoomMemberEvent.Typing, () => typing(bob, aliceId) === false, "bob to see alice stop typing");
    await bob.sendTyping(roomId, true, 30_000);
    await until(alice, RoomMemberEvent.Typing, () => typing(alice, bobId) === true, "alice to see bob typing");

    // Read receipts, both ways, through Room.receipt: bob with a receipt, alice with read markers.
    const readUpTo = (client, userId) =>
        client.getRoom(roomId).getReadReceiptForUserId(userId, true, ReceiptType.Read)?.eventId;
    const lastOfAlice = bob.getRoom(roomId).findEventById(fromAlice.at(-1).id);
    await bob.sendReadReceipt(lastOfAlice, ReceiptType.Read);
    await until(alice, RoomEvent.Receipt, () => readUpTo(alice, bobId) === lastOfAlice.getId(), "alice to see bob's receipt");
    const lastOfBob = fromBob.at(-1).id;
    await alice.setRoomReadMarkers(roomId, lastOfBob, alice.getRoom(roomId).findEventById(lastOfBob));
    await until(bob, RoomEvent.Receipt, () => readUpTo(bob, aliceId) === lastOfBob, "bob to see alice's receipt");

    assertSyncHealthy(alice, aliceSync);
    assertSyncHealthy(bob, bobSync);

    // Alice's client stops (its IndexedDB store keeps the sync token); bob writes meanwhile.
    alice.stopClient();
    await until(alice, ClientEvent.Sync, () => aliceSync.states.at(-1) === SyncState.Stopped, "alice's sync to stop");
    await store.save(true);
    const stoppedAt = await store.getSavedSyncToken();
    assert.ok(stoppedAt, "the store has a sync token");
    const whileAway = await sendAll(bob, roomId, "bob away", 30, viaSendMessage);
    await seesAll(bob, bobSync, whileAway, "bob");
    const fullReference = await messagesIds(bob, roomId);
    assert.deepEqual(fullReference, [...reference, ...whileAway.map((s) => s.id)]);

    // A new client on the same store (a reloaded browser tab) syncs on from the stored token:
    // the cached timeline, then exactly the 30 new messages live, then scrollback to the start.
    const requests = [];
    const fetchFn = (url, init) => {
        requests.push(new URL(url));
        return fetch(url, init);
    };
    const reloadedStore = new IndexedDBStore({ indexedDB: globalThis.indexedDB, dbName });
    const reloaded = as(aliceLogin, { store: reloadedStore, fetchFn });
    await reloadedStore.startup();
    clients.push(reloaded);
    const reloadedSync = await startSyncing(reloaded, roomId, { filter: roomyFilter(aliceId) });
    await seesAll(reloaded, reloadedSync, whileAway, "alice after reload");
    const firstSync = requests.find((u) => u.pathname.endsWith("/sync"));
    assert.equal(firstSync?.searchParams.get("since"), stoppedAt, "the first sync after reload is from the stored token");
    assert.deepEqual(
        bodies(reloadedSync.timeline.filter(isMessage)),
        bodies(whileAway),
        "after reload, exactly the messages sent while away arrive live",
    );
    await scrollbackToStart(reloaded, roomId, "alice after reload");
    assertTimeline(reloaded.getRoom(roomId).getLiveTimeline().getEvents(), allSentBySender(), fullReference, "reloaded");
    assertSyncHealthy(reloaded, reloadedSync);
    reloaded.stopClient();

    // A fresh client (new store, first sync limited to the SDK's default 8 events) gets the rest by
    // scrollback: prev_batch and /messages take it back to the room's creation.
    const freshClient = as(aliceLogin);
    clients.push(freshClient);
    const freshSync = await startSyncing(freshClient, roomId);
    const initial = freshClient.getRoom(roomId).getLiveTimeline().getEvents().filter(isMessage);
    assert.deepEqual(bodies(initial), bodies(whileAway.slice(-initial.length)), "the initial sync has the latest messages");
    assert.ok(initial.length > 0 && initial.length <= 8, `initial sync timeline of ${initial.length} messages`);
    await scrollbackToStart(freshClient, roomId, "a fresh client");
    assertTimeline(freshClient.getRoom(roomId).getLiveTimeline().getEvents(), allSentBySender(), fullReference, "fresh");
    assertSyncHealthy(freshClient, freshSync);

    function allSentBySender() {
        return { [aliceId]: fromAlice, [bobId]: [...fromBob, ...whileAway] };
    }
});

/** Paginates the live timeline back (the SDK's scrollback) until it holds the room's creation. */
async function scrollbackToStart(client, roomId, who) {
    const room = client.getRoom(roomId);
    const hasCreate = () => room.getLiveTimeline().getEvents().some((e) => e.getType() === EventType.RoomCreate);
    for (let i = 0; i < 50 && !hasCreate(); i++) await client.scrollback(room, 100);
    assert.ok(hasCreate(), `${who}: scrollback did not reach m.room.create`);
}
