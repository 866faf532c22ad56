// End-to-end encryption with matrix-js-sdk's Rust crypto (matrix-sdk-crypto-wasm) against a real
// Myelin: two users, each with the SDK's sync loop and initRustCrypto, share a room with
// m.room.encryption and each sends messages the other decrypts. The SDK uploads device and
// one-time keys, tracks the other's devices through /keys/query and the sync's device_lists, claims
// a one-time key, sends the room key over Olm to-device and encrypts with Megolm; the server only
// holds ciphertext. Then cross-signing is bootstrapped (the first upload of cross-signing keys
// needs no password), the device is signed by its self-signing key, and the other side sees it.
// Every wait has a deadline and says what is missing.
import assert from "node:assert/strict";
import { test } from "node:test";

import "fake-indexeddb/auto";
import { ClientEvent, EventType, MatrixEventEvent, MsgType, RoomEvent, SyncState } from "matrix-js-sdk";

import { fresh, PASSWORD, useMyelin } from "./helpers.mjs";

const { as, register } = useMyelin();

const DEADLINE_MS = 30_000;

/** Resolves once check() returns something truthy, checked now and on each of `events`; rejects after the deadline. */
function until(emitter, events, check, what, ms = DEADLINE_MS) {
    return new Promise((resolve, reject) => {
        const done = () => {
            clearTimeout(timer);
            for (const e of events) emitter.off(e, poll);
        };
        const timer = setTimeout(() => {
            done();
            reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
        }, ms);
        async function poll() {
            try {
                const found = await check();
                if (found) {
                    done();
                    resolve(found);
                }
            } catch (e) {
                done();
                reject(e);
            }
        }
        for (const e of events) emitter.on(e, poll);
        poll();
    });
}

/** Resolves to check()'s first truthy result, tried every 200 ms; rejects after the deadline. */
async function eventually(check, what, ms = DEADLINE_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
        const found = await check();
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
    }
}

/** A registered user whose client runs Rust crypto (in memory) and the sync loop. */
async function encryptingClient(t) {
    const login = await register(fresh());
    const client = as(login);
    t.after(() => client.stopClient());
    await client.initRustCrypto({ useIndexedDB: false });
    const errors = [];
    client.on(ClientEvent.Sync, (state, _prev, data) => {
        if (state === SyncState.Error) errors.push(data?.error ?? state);
    });
    await client.startClient({ initialSyncLimit: 20 });
    await until(client, [ClientEvent.Sync], () => client.getSyncState() === SyncState.Prepared || errors.length, "PREPARED");
    assert.deepEqual(errors, []);
    return { client, login, errors };
}

/** Waits until the event is in the room's live timeline and decrypted; returns it. */
async function decrypted(client, roomId, eventId, who) {
    const event = await until(
        client,
        [RoomEvent.Timeline, MatrixEventEvent.Decrypted],
        () => client.getRoom(roomId)?.findEventById(eventId),
        `${who} to receive ${eventId}`,
    );
    await client.decryptEventIfNeeded(event);
    await until(event, [MatrixEventEvent.Decrypted], () => !event.isBeingDecrypted() && !event.shouldAttemptDecryption(), `${who} to decrypt ${eventId}`);
    assert.ok(event.isEncrypted(), `${eventId} was not sent encrypted`);
    assert.ok(!event.isDecryptionFailure(), `${who} could not decrypt ${eventId}: ${event.decryptionFailureReason}`);
    return event;
}

test("two Rust-crypto clients exchange encrypted messages and each decrypts the other's", async (t) => {
    const alice = await encryptingClient(t);
    const bob = await encryptingClient(t);
    const [aliceId, bobId] = [alice.client.getUserId(), bob.client.getUserId()];

    // The SDK publishes each device's keys (after its first sync): the other sees them through
    // /keys/query.
    await eventually(async () => {
        const keys = await alice.client.downloadKeysForUsers([bobId]);
        return keys.device_keys[bobId]?.[bob.login.device_id];
    }, "bob's device keys");

    const { room_id: roomId } = await alice.client.createRoom({
        invite: [bobId],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await eventually(() => bob.client.getRoom(roomId)?.getMyMembership() === "invite", "bob's invite");
    await bob.client.joinRoom(roomId);
    await eventually(() => alice.client.getRoom(roomId)?.getMember(bobId)?.membership === "join", "alice to see bob join");
    assert.ok(await alice.client.getCrypto().isEncryptionEnabledInRoom(roomId));

    // Alice to bob, then bob to alice, then once more each way.
    const exchanges = [
        [alice, bob, "hello bob"],
        [bob, alice, "hello alice"],
        [alice, bob, "still secret"],
        [bob, alice, "indeed"],
    ];
    for (const [from, to, body] of exchanges) {
        const { event_id: eventId } = await from.client.sendMessage(roomId, { msgtype: MsgType.Text, body });
        // On the server, only ciphertext.
        const raw = await to.client.fetchRoomEvent(roomId, eventId);
        assert.equal(raw.type, EventType.RoomMessageEncrypted);
        assert.ok(!JSON.stringify(raw).includes(body), "the server has the plaintext");
        const event = await decrypted(to.client, roomId, eventId, to.client.getUserId());
        assert.equal(event.getType(), EventType.RoomMessage);
        assert.equal(event.getContent().body, body);
        assert.equal(event.getSender(), from.client.getUserId());
    }
    assert.deepEqual([...alice.errors, ...bob.errors], []);

    // Cross-signing: the first upload of the keys needs no password (the callback would fail the
    // test if asked), the device is signed, and bob sees alice's identity.
    await alice.client.getCrypto().bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (e) {
                // Should a server want UIA, answer with the password once.
                if (e.httpStatus !== 401) throw e;
                await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: aliceId }, password: PASSWORD, session: e.data.session });
            }
        },
    });
    const status = await alice.client.getCrypto().getCrossSigningStatus();
    assert.ok(status.publicKeysOnDevice && status.privateKeysCachedLocally.masterKey, JSON.stringify(status));
    const device = await eventually(
        async () => {
            await bob.client.getCrypto().getUserDeviceInfo([aliceId], true);
            const info = await bob.client.getCrypto().getDeviceVerificationStatus(aliceId, alice.login.device_id);
            return info?.signedByOwner ? info : null;
        }, "bob to see alice's device signed by her self-signing key",
    );
    assert.ok(device.signedByOwner);
});
