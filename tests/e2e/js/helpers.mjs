// What the test files share: a Myelin per file, SDK clients for it, registration, error checks.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before } from "node:test";

import { createClient, MatrixError } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

import { SERVER_NAME, startMyelin } from "./server.mjs";

export { SERVER_NAME };
export const PASSWORD = "correct horse battery staple";

logger.setLevel(process.env.E2E_SDK_LOG ?? "warn"); // "debug" shows every request

/** A fresh localpart (or alias localpart), so tests never share accounts or aliases. */
export const fresh = () => `js-${randomUUID().slice(0, 10)}`;
export const mxid = (localpart) => `@${localpart}:${SERVER_NAME}`;

/** Resolves to the MatrixError the promise rejects with; fails if it does not reject with one. */
export async function matrixError(promise, httpStatus, errcode) {
    const err = await promise.then(
        (ok) => assert.fail(`expected HTTP ${httpStatus}, got ${JSON.stringify(ok)}`),
        (e) => e,
    );
    assert.ok(err instanceof MatrixError, `not a MatrixError: ${err}`);
    assert.equal(err.httpStatus, httpStatus);
    assert.equal(err.errcode, errcode);
    return err;
}

/**
 * Starts one Myelin for the calling test file (before/after hooks) and returns client factories:
 * anonymous() is a client without a token, as(credentials, options) one logged in with a
 * register/login response (options go to createClient, e.g. a store), register(username, extra)
 * registers through UIA and resolves to that response; url() is the server's base URL.
 */
export function useMyelin() {
    let server;
    before(async () => (server = await startMyelin()));
    after(async () => server?.stop());

    const anonymous = () => createClient({ baseUrl: server.url });
    const as = ({ access_token, user_id, device_id }, options = {}) =>
        createClient({ baseUrl: server.url, accessToken: access_token, userId: user_id, deviceId: device_id, ...options });

    /** Registers through the full UIA dance: 401 with a session and the flows, then m.login.dummy. */
    async function register(username, extra = {}) {
        const body = { username, password: PASSWORD, ...extra };
        const challenge = await matrixError(anonymous().registerRequest(body), 401, undefined);
        assert.deepEqual(challenge.data.flows, [{ stages: ["m.login.dummy"] }]);
        assert.equal(typeof challenge.data.session, "string");
        const auth = { type: "m.login.dummy", session: challenge.data.session };
        const registered = await anonymous().registerRequest({ ...body, auth });
        assert.equal(registered.user_id, mxid(username));
        assert.ok(registered.device_id && registered.access_token);
        return registered;
    }

    return { anonymous, as, register, url: () => server.url };
}
