// Myelin's WebSocket transport (docs/websocket.md) from Node's `ws`, used as a browser would: the
// token in the query string, subprotocol m.json. Alice is on the socket; Bob runs matrix-js-sdk's
// real sync loop. Every wait has a deadline and says what it was waiting for.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ClientEvent, EventType, PendingEventOrdering, RoomEvent, SyncState } from "matrix-js-sdk";
import WebSocket from "ws";

import { fresh, useMyelin } from "./helpers.mjs";

const { as, register, url } = useMyelin();

const DEADLINE_MS = 15_000;
const STREAM = "/_matrix/client/unstable/io.myelin.websocket/stream";

/** A WebSocket that keeps every JSON message it receives and lets a test wait for one. */
class Stream {
    static async open(accessToken, query = {}) {
        const params = new URLSearchParams({ ...query, access_token: accessToken });
        const ws = new WebSocket(`${url().replace(/^http/, "ws")}${STREAM}?${params}`, "m.json");
        const stream = new Stream(ws);
        await new Promise((resolve, reject) => {
            ws.once("open", resolve);
            ws.once("error", reject);
            ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
        });
        return stream;
    }

    constructor(ws) {
        this.ws = ws;
        this.messages = [];
        this.closed = null;
        this.wakers = new Set();
        this.wake = () => this.wakers.forEach((wake) => wake());
        ws.on("message", (data, isBinary) => {
            assert.equal(isBinary, false, "the server sent a binary frame");
            this.messages.push(JSON.parse(data.toString()));
            this.wake();
        });
        ws.on("close", (code, reason) => {
            this.closed = { code, reason: reason.toString() };
            this.wake();
        });
    }

    /** Sync updates: the messages without an `id`. */
    updates() {
        return this.messages.filter((m) => !("id" in m));
    }

    /** The first message (from the start) for which pick() is truthy; that value. */
    async waitFor(pick, what, ms = DEADLINE_MS) {
        const deadline = Date.now() + ms;
        for (;;) {
            for (const message of this.messages) {
                const picked = pick(message);
                if (picked) return picked;
            }
            if (this.closed) assert.fail(`socket closed (${JSON.stringify(this.closed)}) while waiting for ${what}`);
            const left = deadline - Date.now();
            if (left <= 0) assert.fail(`timed out after ${ms} ms waiting for ${what}; got ${JSON.stringify(this.messages)}`);
            await new Promise((resolve) => {
                const wake = () => {
                    clearTimeout(timer);
                    this.wakers.delete(wake);
                    resolve();
                };
                const timer = setTimeout(wake, left);
                this.wakers.add(wake);
            });
        }
    }

    /** Sends a request and resolves to its answer (`result` or `error`). */
    async request(id, method, params) {
        this.ws.send(JSON.stringify({ id, method, params }));
        return this.waitFor((m) => m.id === id && m, `the answer to request ${id} (${method})`);
    }

    /** The timeline event `eventId` of `roomId` from any sync update so far. */
    async timelineEvent(roomId, eventId, what) {
        return this.waitFor(
            (m) => !("id" in m) && m.rooms?.join?.[roomId]?.timeline?.events?.find((e) => e.event_id === eventId),
            what,
        );
    }

    async close() {
        if (this.closed) return;
        const closed = new Promise((resolve) => this.ws.once("close", resolve));
        this.ws.close(1000, "done");
        await closed;
    }
}

/** Bob's real sync loop; resolves once PREPARED, with the live timeline events of the room. */
async function startSyncing(client, roomId) {
    const timeline = [];
    const errors = [];
    client.on(ClientEvent.Sync, (state, _prev, data) => {
        if (state === SyncState.Error || data?.error) errors.push(data?.error ?? state);
    });
    client.on(RoomEvent.Timeline, (event, room, toStart, removed, data) => {
        if (room?.roomId === roomId && !toStart && !removed && data.liveEvent) timeline.push(event);
    });
    const prepared = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`bob's sync not PREPARED in ${DEADLINE_MS} ms`)), DEADLINE_MS);
        client.on(ClientEvent.Sync, (state) => {
            if (state === SyncState.Prepared) resolve(clearTimeout(timer));
            if (state === SyncState.Error) reject(new Error(`bob's sync failed: ${errors}`));
        });
    });
    await client.startClient({ pendingEventOrdering: PendingEventOrdering.Detached });
    await prepared;
    return { timeline, errors };
}

test("a browser-like WebSocket client: first update, receive, send, seen over /sync", async (t) => {
    const aliceLogin = await register(fresh());
    const [alice, bob] = [as(aliceLogin), as(await register(fresh()))];
    t.after(() => bob.stopClient());
    const { room_id: roomId } = await bob.createRoom({ preset: "public_chat", name: "Socket room" });
    await alice.joinRoom(roomId);
    const bobSync = await startSyncing(bob, roomId);

    const stream = await Stream.open(aliceLogin.access_token);
    t.after(() => stream.close());
    assert.equal(stream.ws.protocol, "m.json", "the server chose the m.json subprotocol");

    // The first message is an initial sync update: next_batch, and the room Alice is in, whole.
    const first = await stream.waitFor((m) => m, "the first sync update");
    assert.ok(!("id" in first), `the first message is not an update: ${JSON.stringify(first)}`);
    assert.match(first.next_batch, /\S/);
    const joined = first.rooms?.join?.[roomId];
    assert.ok(joined, `the first update lacks the room: ${JSON.stringify(first.rooms)}`);
    const members = [...joined.state.events, ...joined.timeline.events].filter((e) => e.type === "m.room.member");
    assert.ok(members.some((e) => e.state_key === alice.getUserId() && e.content.membership === "join"));

    // Bob sends through the SDK; the socket pushes it to Alice without being asked.
    const { event_id: fromBob } = await bob.sendTextMessage(roomId, "Hello over the socket");
    const pushed = await stream.timelineEvent(roomId, fromBob, "Bob's message in an update");
    assert.equal(pushed.sender, bob.getUserId());
    assert.deepEqual(pushed.content, { msgtype: "m.text", body: "Hello over the socket" });

    // Requests on the same socket: ping, then send; the answer carries the request's id.
    assert.deepEqual(await stream.request("p1", "ping", {}), { id: "p1", result: {} });
    const content = { msgtype: "m.text", body: "Hi Bob, from a WebSocket" };
    const sent = await stream.request("m1", "send", { room_id: roomId, event_type: "m.room.message", content });
    assert.match(sent.result?.event_id ?? "", /^\$/, `send answered ${JSON.stringify(sent)}`);
    const fromAlice = sent.result.event_id;
    // The id is the transaction ID: sending it again is the same event, not a second one.
    const again = await stream.request("m1", "send", { room_id: roomId, event_type: "m.room.message", content });
    assert.deepEqual(again, { id: "m1", result: { event_id: fromAlice } });
    // A request the server does not know is an error answer, and the socket stays open.
    const unknown = await stream.request("x1", "fly", {});
    assert.equal(unknown.error?.errcode, "M_UNRECOGNIZED", JSON.stringify(unknown));

    // Alice's own message comes back in an update, with the transaction ID for her device.
    const echo = await stream.timelineEvent(roomId, fromAlice, "Alice's own message in an update");
    assert.equal(echo.unsigned?.transaction_id, "m1");

    // Bob's /sync loop (the SDK) gets Alice's message, once.
    await new Promise((resolve, reject) => {
        const has = () => bobSync.timeline.some((e) => e.getId() === fromAlice);
        const timer = setTimeout(() => {
            bob.off(RoomEvent.Timeline, check);
            reject(new Error(`bob's sync did not deliver ${fromAlice} in ${DEADLINE_MS} ms`));
        }, DEADLINE_MS);
        function check() {
            if (has()) {
                clearTimeout(timer);
                bob.off(RoomEvent.Timeline, check);
                resolve();
            }
        }
        bob.on(RoomEvent.Timeline, check);
        check();
    });
    const received = bobSync.timeline.filter((e) => e.getId() === fromAlice);
    assert.equal(received.length, 1, "bob got Alice's message once");
    assert.equal(received[0].getSender(), alice.getUserId());
    assert.deepEqual(received[0].getContent(), content);
    assert.deepEqual(bobSync.errors, []);

    // No update repeats an event: each timeline event arrived in exactly one update.
    const ids = stream.updates().flatMap((u) => Object.values(u.rooms?.join ?? {}).flatMap((r) => r.timeline.events));
    const eventIds = ids.map((e) => e.event_id);
    assert.equal(new Set(eventIds).size, eventIds.length, "an event came in two updates");
    assert.equal(eventIds.filter((id) => id === fromAlice).length, 1);

    // Reconnecting from the last next_batch gives an update with nothing old in it.
    const last = stream.updates().at(-1).next_batch;
    await stream.close();
    assert.equal(stream.closed.code, 1000);
    const resumed = await Stream.open(aliceLogin.access_token, { since: last });
    t.after(() => resumed.close());
    const firstAgain = await resumed.waitFor((m) => m, "the first update after reconnecting");
    assert.ok(!("id" in firstAgain));
    assert.deepEqual(firstAgain.rooms?.join ?? {}, {}, "nothing old after reconnecting with since");
    const { event_id: later } = await bob.sendEvent(roomId, EventType.RoomMessage, { msgtype: "m.text", body: "later" });
    await resumed.timelineEvent(roomId, later, "a message sent after reconnecting");
});
