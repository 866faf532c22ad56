// Accounts, devices, profiles and account data through matrix-js-sdk against a real Myelin.
// No startClient(): that needs /sync. The SDK's request methods are used directly.
import assert from "node:assert/strict";
import { test } from "node:test";

import { fresh, matrixError, mxid, PASSWORD, useMyelin } from "./helpers.mjs";

const { anonymous, as, register } = useMyelin();
const passwordAuth = (user, password, session) => ({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    session,
});

async function login(username, deviceName, password = PASSWORD) {
    return anonymous().loginRequest({
        ...passwordAuth(username, password),
        initial_device_display_name: deviceName,
    });
}

async function deviceNames(client) {
    const { devices } = await client.getDevices();
    return Object.fromEntries(devices.map((d) => [d.device_id, d.display_name]));
}

test("register, log in, profile, devices, account data, log out", async () => {
    const username = fresh();
    const phone = await register(username, { initial_device_display_name: "js phone" });
    const laptopLogin = await login(username, "js laptop");
    assert.equal(laptopLogin.user_id, mxid(username));
    assert.notEqual(laptopLogin.device_id, phone.device_id);
    const laptop = as(laptopLogin);

    assert.deepEqual(await laptop.whoami(), { user_id: mxid(username), device_id: laptopLogin.device_id, is_guest: false });

    await laptop.setDisplayName("Bob JS");
    assert.deepEqual(await as(phone).getProfileInfo(mxid(username)), { displayname: "Bob JS" });
    assert.deepEqual(await anonymous().getProfileInfo(mxid(username), "displayname"), { displayname: "Bob JS" });

    assert.deepEqual(await deviceNames(laptop), { [phone.device_id]: "js phone", [laptopLogin.device_id]: "js laptop" });
    await laptop.setDeviceDetails(phone.device_id, { display_name: "old phone" });
    assert.equal((await laptop.getDevice(phone.device_id)).display_name, "old phone");

    // Deleting a device is behind UIA: the first call only yields the session and the flows.
    const challenge = await matrixError(laptop.deleteDevice(phone.device_id), 401, undefined);
    assert.ok(challenge.data.flows.some((f) => f.stages.join() === "m.login.password"));
    await laptop.deleteDevice(phone.device_id, passwordAuth(username, PASSWORD, challenge.data.session));
    assert.deepEqual(await deviceNames(laptop), { [laptopLogin.device_id]: "js laptop" });
    await matrixError(as(phone).whoami(), 401, "M_UNKNOWN_TOKEN");

    await laptop.setAccountData("org.example.e2e", { answer: 42, nested: { list: [1, "two"] } });
    assert.deepEqual(await laptop.getAccountDataFromServer("org.example.e2e"), { answer: 42, nested: { list: [1, "two"] } });
    assert.equal(await laptop.getAccountDataFromServer("org.example.never.set"), null); // the SDK maps M_NOT_FOUND to null

    const capabilities = await laptop.getCapabilities();
    assert.deepEqual(capabilities["m.change_password"], { enabled: true });

    await laptop.logout();
    const refused = await matrixError(laptop.whoami(), 401, "M_UNKNOWN_TOKEN");
    assert.equal(refused.data.soft_logout ?? false, false);
});

test("wrong password is M_FORBIDDEN, a taken username M_USER_IN_USE", async () => {
    const username = fresh();
    assert.equal(await anonymous().isUsernameAvailable(username), true);
    await register(username);
    assert.equal(await anonymous().isUsernameAvailable(username), false);
    await matrixError(login(username, "x", "wrong password"), 403, "M_FORBIDDEN");
    await matrixError(
        anonymous().registerRequest({ username, password: "other", auth: { type: "m.login.dummy" } }),
        400,
        "M_USER_IN_USE",
    );
    const flows = await anonymous().loginFlows();
    assert.ok(flows.flows.some((f) => f.type === "m.login.password"));
});

test("refresh token rotates the access token on the same device", async () => {
    const username = fresh();
    const registered = await register(username, { refresh_token: true });
    assert.equal(typeof registered.refresh_token, "string");
    assert.ok(registered.expires_in_ms > 0);

    const refreshed = await anonymous().refreshToken(registered.refresh_token);
    assert.notEqual(refreshed.access_token, registered.access_token);
    assert.notEqual(refreshed.refresh_token, registered.refresh_token);
    const me = await as({ ...registered, access_token: refreshed.access_token }).whoami();
    assert.equal(me.device_id, registered.device_id);
    // Once the new access token has been used, the old refresh token is spent: 401 M_UNKNOWN_TOKEN
    // per the spec ("unknown, or has already been used"); Synapse answers 403 M_FORBIDDEN instead.
    await matrixError(anonymous().refreshToken(registered.refresh_token), 401, "M_UNKNOWN_TOKEN");
});

test("password change and deactivation", async () => {
    const username = fresh();
    const client = as(await register(username));
    const other = await login(username, "other");

    await client.setPassword(passwordAuth(username, PASSWORD), "new password", true);
    await client.whoami(); // the device that changed the password stays logged in...
    await matrixError(as(other).whoami(), 401, "M_UNKNOWN_TOKEN"); // ...the others are logged out
    await matrixError(login(username, "old"), 403, "M_FORBIDDEN");
    const relogin = await login(username, "new", "new password");
    assert.equal(relogin.user_id, mxid(username));

    await client.deactivateAccount(passwordAuth(username, "new password"));
    await matrixError(client.whoami(), 401, "M_UNKNOWN_TOKEN");
    // Synapse deletes the password on deactivation, so this is M_FORBIDDEN there too.
    await matrixError(login(username, "gone", "new password"), 403, "M_FORBIDDEN");
});
