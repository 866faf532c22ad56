// Rooms through matrix-js-sdk against a real Myelin: two users create a room, join it by alias,
// exchange messages and leave. No startClient() (no /sync yet): events are read back by ID.
import assert from "node:assert/strict";
import { test } from "node:test";

import { fresh, matrixError, SERVER_NAME, useMyelin } from "./helpers.mjs";

const { as, register } = useMyelin();

/** A registered user with a display name (so it shows in the membership events). */
async function user(displayName) {
    const client = as(await register(fresh()));
    await client.setDisplayName(displayName);
    return client;
}

/** user ID -> display name of the joined members, as the given client sees them. */
async function joinedNames(client, roomId) {
    const { joined } = await client.getJoinedRoomMembers(roomId);
    return Object.fromEntries(Object.entries(joined).map(([id, member]) => [id, member.display_name]));
}

test("two users create a room, join it by alias, exchange messages and leave", async () => {
    const [alice, bob] = [await user("Alice"), await user("Bob")];
    const [aliceId, bobId] = [alice.getUserId(), bob.getUserId()];
    const aliasName = fresh();
    const alias = `#${aliasName}:${SERVER_NAME}`;

    const { room_id: roomId } = await alice.createRoom({
        room_alias_name: aliasName,
        name: "Tea room",
        topic: "Earl Grey",
        preset: "public_chat",
    });
    assert.match(roomId, /^!/);
    assert.deepEqual(await bob.getRoomIdForAlias(alias), { room_id: roomId, servers: [SERVER_NAME] });

    const joined = await bob.joinRoom(alias); // the SDK's Room, built from the room ID the server returned
    assert.equal(joined.roomId, roomId);
    assert.deepEqual(await joinedNames(alice, roomId), { [aliceId]: "Alice", [bobId]: "Bob" });
    assert.deepEqual(await bob.getJoinedRooms(), { joined_rooms: [roomId] });
    assert.deepEqual(await alice.getJoinedRooms(), { joined_rooms: [roomId] });
    assert.deepEqual(await bob.getStateEvent(roomId, "m.room.name", ""), { name: "Tea room" });
    assert.equal((await bob.getStateEvent(roomId, "m.room.topic", "")).topic, "Earl Grey");

    // Alice writes, Bob reads it by event ID; a retry with the same transaction ID is the same event.
    const hello = await alice.sendTextMessage(roomId, "Hello Bob", "txn-1");
    assert.match(hello.event_id, /^\$/);
    assert.deepEqual(await alice.sendTextMessage(roomId, "Hello Bob", "txn-1"), hello);
    const seen = await bob.fetchRoomEvent(roomId, hello.event_id);
    assert.equal(seen.event_id, hello.event_id);
    assert.equal(seen.room_id, roomId);
    assert.equal(seen.sender, aliceId);
    assert.equal(seen.type, "m.room.message");
    assert.deepEqual(seen.content, { msgtype: "m.text", body: "Hello Bob" });
    assert.equal(typeof seen.origin_server_ts, "number");
    assert.ok(Math.abs(Date.now() - seen.origin_server_ts) < 60_000, `origin_server_ts ${seen.origin_server_ts}`);

    // Bob answers, Alice reads the answer.
    const reply = await bob.sendMessage(roomId, { msgtype: "m.notice", body: "Hi Alice" });
    assert.notEqual(reply.event_id, hello.event_id);
    const answer = await alice.fetchRoomEvent(roomId, reply.event_id);
    assert.equal(answer.sender, bobId);
    assert.deepEqual(answer.content, { msgtype: "m.notice", body: "Hi Alice" });

    // Alice changes the topic; Bob sees the new one.
    const topic = await alice.sendStateEvent(roomId, "m.room.topic", { topic: "Darjeeling" });
    assert.match(topic.event_id, /^\$/);
    assert.deepEqual(await bob.getStateEvent(roomId, "m.room.topic", ""), { topic: "Darjeeling" });

    // Alice redacts her message: Bob gets it back with the content stripped.
    const redaction = await alice.redactEvent(roomId, hello.event_id, undefined, { reason: "typo" });
    assert.match(redaction.event_id, /^\$/);
    const redacted = await bob.fetchRoomEvent(roomId, hello.event_id);
    assert.equal(redacted.event_id, hello.event_id);
    assert.equal(redacted.sender, aliceId);
    assert.deepEqual(redacted.content, {});
    assert.equal(redacted.unsigned?.redacted_because?.event_id, redaction.event_id);
    assert.equal(redacted.unsigned.redacted_because.content.reason, "typo");

    // Bob leaves: no longer joined, can no longer send; Alice is alone. Then he forgets the room.
    assert.deepEqual(await bob.leave(roomId), {});
    assert.deepEqual(await bob.getJoinedRooms(), { joined_rooms: [] });
    assert.deepEqual(await joinedNames(alice, roomId), { [aliceId]: "Alice" });
    // (The SDK logs this expected refusal as "Error sending event M_FORBIDDEN".)
    await matrixError(bob.sendTextMessage(roomId, "still here?"), 403, "M_FORBIDDEN");
    assert.deepEqual(await bob.forget(roomId), {});
    assert.deepEqual(await bob.getJoinedRooms(), { joined_rooms: [] });
});

test("an invite-only room refuses a join; an invite lets the user in", async () => {
    const [alice, bob] = [await user("Alice"), await user("Bob")];
    const [aliceId, bobId] = [alice.getUserId(), bob.getUserId()];

    const closed = await alice.createRoom({ preset: "private_chat" });
    assert.deepEqual(await alice.getStateEvent(closed.room_id, "m.room.join_rules", ""), { join_rule: "invite" });
    await matrixError(bob.joinRoom(closed.room_id), 403, "M_FORBIDDEN");
    assert.deepEqual(await joinedNames(alice, closed.room_id), { [aliceId]: "Alice" });

    const invited = await alice.createRoom({ preset: "private_chat", invite: [bobId] });
    const membership = await alice.getStateEvent(invited.room_id, "m.room.member", bobId);
    assert.equal(membership.membership, "invite");
    assert.equal((await bob.joinRoom(invited.room_id)).roomId, invited.room_id);
    assert.deepEqual(await joinedNames(bob, invited.room_id), { [aliceId]: "Alice", [bobId]: "Bob" });
    assert.deepEqual(await bob.getJoinedRooms(), { joined_rooms: [invited.room_id] });
});
