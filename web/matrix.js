// A small client for the Matrix client-server API, written to be read: every call is the plain
// HTTP request the spec describes. Real time comes from Myelin's WebSocket transport
// (docs/websocket.md), or from long-poll /sync where WebSockets are unavailable.

/** A failed request, with the Matrix error code and HTTP status. */
export class MatrixError extends Error {
    constructor(status, body) {
        super(body?.error || `HTTP ${status}`);
        this.status = status;
        this.errcode = body?.errcode;
        this.body = body;
    }
}

/** Turns an ID or alias into a path segment (`#` and `!` must be escaped). */
export const seg = (s) => encodeURIComponent(s);

export class Client {
    /** `session`: {access_token, user_id, device_id} from login or registration, or null. */
    constructor(session = null, baseUrl = "") {
        this.baseUrl = baseUrl;
        this.session = session;
        this.onSync = () => {};
        this.onStatus = () => {};
        this.onLoggedOut = () => {};
        this.nextBatch = null;
        this.transport = null; // "websocket" or "long-poll" once syncing
        this.ws = null;
        this.pending = new Map(); // WebSocket request id → {resolve, reject}
        this.stopped = true;
        this.txn = 0;
    }

    get userId() {
        return this.session?.user_id;
    }

    get serverName() {
        return this.userId?.slice(this.userId.indexOf(":") + 1);
    }

    /** One HTTP request; resolves to the JSON body, rejects with a MatrixError. */
    async request(method, path, body, { query, auth = true, raw, contentType, signal } = {}) {
        let url = this.baseUrl + path;
        if (query) url += "?" + new URLSearchParams(Object.entries(query).filter(([, v]) => v != null));
        const headers = {};
        if (auth && this.session) headers.Authorization = `Bearer ${this.session.access_token}`;
        let payload;
        if (raw !== undefined) {
            payload = raw;
            headers["Content-Type"] = contentType || "application/octet-stream";
        } else if (body !== undefined) {
            payload = JSON.stringify(body);
            headers["Content-Type"] = "application/json";
        }
        const response = await fetch(url, { method, headers, body: payload, signal });
        const text = await response.text();
        let json = {};
        try {
            json = text ? JSON.parse(text) : {};
        } catch {
            json = { error: text };
        }
        if (!response.ok) {
            const error = new MatrixError(response.status, json);
            if (response.status === 401 && json.errcode === "M_UNKNOWN_TOKEN" && auth && this.session) {
                this.stop();
                this.onLoggedOut(error);
            }
            throw error;
        }
        return json;
    }

    // ----- accounts -----

    async login(user, password) {
        this.session = await this.request("POST", "/_matrix/client/v3/login", {
            type: "m.login.password",
            identifier: { type: "m.id.user", user },
            password,
            initial_device_display_name: "Myelin web",
        }, { auth: false });
        return this.session;
    }

    /**
     * Registers through user-interactive authentication: the first request answers 401 with the
     * flows; we complete the stages we know (a registration token when the server asks for one,
     * then the dummy stage) in the same session.
     */
    async register(username, password, token) {
        const body = { username, password, initial_device_display_name: "Myelin web" };
        let answer;
        try {
            return (this.session = await this.request("POST", "/_matrix/client/v3/register", body, { auth: false }));
        } catch (e) {
            if (e.status !== 401 || !e.body?.flows) throw e;
            answer = e.body;
        }
        const known = ["m.login.registration_token", "m.login.dummy"];
        const flow = answer.flows.find((f) => f.stages.every((s) => known.includes(s)));
        if (!flow) throw new MatrixError(400, { error: "This server needs a registration step this client does not know" });
        for (;;) {
            const done = answer.completed || [];
            const stage = flow.stages.find((s) => !done.includes(s));
            const auth = { type: stage, session: answer.session };
            if (stage === "m.login.registration_token") {
                if (!token) throw new MatrixError(401, { errcode: "M_MISSING_TOKEN", error: "This server needs a registration token" });
                auth.token = token;
            }
            try {
                return (this.session = await this.request("POST", "/_matrix/client/v3/register", { ...body, auth }, { auth: false }));
            } catch (e) {
                if (e.status !== 401 || !e.body?.flows || e.body.errcode) throw e;
                answer = e.body;
            }
        }
    }

    /** Whether registration asks for a token (from the first UIA answer, without registering). */
    async registrationFlows() {
        try {
            await this.request("POST", "/_matrix/client/v3/register", {}, { auth: false });
            return [];
        } catch (e) {
            return e.body?.flows || [];
        }
    }

    async logout() {
        this.stop();
        try {
            await this.request("POST", "/_matrix/client/v3/logout", {});
        } finally {
            this.session = null;
        }
    }

    // ----- real time -----

    /** Starts syncing: over the WebSocket transport when the server offers it, long-poll otherwise. */
    async start({ preferPoll = false } = {}) {
        this.stopped = false;
        let websocket = false;
        if (!preferPoll && "WebSocket" in window) {
            try {
                const versions = await this.request("GET", "/_matrix/client/versions", undefined, { auth: false });
                websocket = !!versions.unstable_features?.["io.myelin.websocket"];
            } catch {}
        }
        if (websocket) this.openSocket(0);
        else this.pollLoop();
    }

    stop() {
        this.stopped = true;
        this.abort?.abort();
        if (this.ws) {
            this.ws.onclose = null;
            this.ws.close(1000);
            this.ws = null;
        }
        for (const { reject } of this.pending.values()) reject(new Error("disconnected"));
        this.pending.clear();
    }

    static FILTER = JSON.stringify({
        room: { timeline: { limit: 40 }, state: { lazy_load_members: false } },
    });

    /**
     * The WebSocket transport, reconnecting with the last `next_batch` so nothing is lost. When it
     * cannot open twice running while HTTP works, long-poll takes over.
     */
    openSocket(failures) {
        const url = new URL(this.baseUrl + "/_matrix/client/unstable/io.myelin.websocket/stream", location.href);
        url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        url.searchParams.set("access_token", this.session.access_token);
        url.searchParams.set("filter", Client.FILTER);
        url.searchParams.set("set_presence", "online");
        if (this.nextBatch) url.searchParams.set("since", this.nextBatch);
        const ws = new WebSocket(url, "m.json");
        this.ws = ws;
        let opened = false;
        ws.onopen = () => {
            opened = true;
            this.transport = "websocket";
            this.onStatus("connected", this.transport);
        };
        ws.onmessage = (message) => {
            const data = JSON.parse(message.data);
            if (data.id !== undefined) {
                const waiter = this.pending.get(data.id);
                this.pending.delete(data.id);
                if (data.error) waiter?.reject(new MatrixError(400, data.error));
                else waiter?.resolve(data.result);
                return;
            }
            const initial = this.nextBatch === null;
            this.nextBatch = data.next_batch;
            this.onSync(data, initial);
        };
        ws.onclose = () => {
            this.ws = null;
            for (const { reject } of this.pending.values()) reject(new Error("disconnected"));
            this.pending.clear();
            if (this.stopped) return;
            this.onStatus("reconnecting", "websocket");
            if (opened) {
                this.socketWorked = true;
                setTimeout(() => !this.stopped && this.openSocket(0), 200);
                return;
            }
            // It did not open. If HTTP works with this token, WebSockets are what is blocked (a
            // proxy without them): long-poll from here on, unless they worked earlier. A refused
            // token ends the session (request() reports it); a server that is down is retried.
            const delay = Math.min(30_000, 500 * 2 ** failures);
            this.request("GET", "/_matrix/client/v3/account/whoami").then(
                () => {
                    if (this.stopped) return;
                    if (!this.socketWorked && failures >= 1) this.pollLoop();
                    else setTimeout(() => !this.stopped && this.openSocket(failures + 1), delay);
                },
                () => !this.stopped && setTimeout(() => !this.stopped && this.openSocket(failures + 1), delay),
            );
        };
    }

    /** Long-poll /sync, the spec's way, for browsers or networks without WebSockets. */
    async pollLoop() {
        this.transport = "long-poll";
        let failures = 0;
        while (!this.stopped) {
            this.abort = new AbortController();
            try {
                const data = await this.request("GET", "/_matrix/client/v3/sync", undefined, {
                    query: {
                        filter: Client.FILTER,
                        since: this.nextBatch,
                        timeout: this.nextBatch ? 30000 : 0,
                        set_presence: "online",
                    },
                    signal: this.abort.signal,
                });
                failures = 0;
                this.onStatus("connected", this.transport);
                const initial = this.nextBatch === null;
                this.nextBatch = data.next_batch;
                this.onSync(data, initial);
            } catch (e) {
                if (this.stopped) return;
                this.onStatus("reconnecting", this.transport);
                await new Promise((r) => setTimeout(r, Math.min(30_000, 1000 * 2 ** failures++)));
            }
        }
    }

    /** A request over the socket when it is open (`docs/websocket.md`), or `fallback` over HTTP. */
    call(method, params, fallback, id) {
        if (this.ws?.readyState === WebSocket.OPEN) {
            id ??= this.newTxnId();
            return new Promise((resolve, reject) => {
                this.pending.set(id, { resolve, reject });
                this.ws.send(JSON.stringify({ id, method, params }));
            });
        }
        return fallback();
    }

    newTxnId() {
        return `web${Date.now().toString(36)}.${++this.txn}`;
    }

    // ----- rooms -----

    /** Sends an event; `txnId` makes a retry idempotent (it is the request id on the socket). */
    send(roomId, type, content, txnId = this.newTxnId()) {
        return this.call("send", { room_id: roomId, event_type: type, content }, () =>
            this.request("PUT", `/_matrix/client/v3/rooms/${seg(roomId)}/send/${seg(type)}/${seg(txnId)}`, content), txnId);
    }

    typing(roomId, typing) {
        const params = { room_id: roomId, typing, timeout: 20000 };
        return this.call("typing", params, () =>
            this.request("PUT", `/_matrix/client/v3/rooms/${seg(roomId)}/typing/${seg(this.userId)}`, { typing, timeout: 20000 }));
    }

    readMarkers(roomId, eventId) {
        const params = { room_id: roomId, "m.fully_read": eventId, "m.read": eventId };
        return this.call("read_markers", params, () =>
            this.request("POST", `/_matrix/client/v3/rooms/${seg(roomId)}/read_markers`, { "m.fully_read": eventId, "m.read": eventId }));
    }

    createRoom(body) {
        return this.request("POST", "/_matrix/client/v3/createRoom", body);
    }

    join(idOrAlias) {
        return this.request("POST", `/_matrix/client/v3/join/${seg(idOrAlias)}`, {});
    }

    leave(roomId) {
        return this.request("POST", `/_matrix/client/v3/rooms/${seg(roomId)}/leave`, {});
    }

    messages(roomId, from, limit = 40) {
        return this.request("GET", `/_matrix/client/v3/rooms/${seg(roomId)}/messages`, undefined, {
            query: { dir: "b", from, limit, filter: JSON.stringify({ lazy_load_members: true }) },
        });
    }

    publicRooms(search) {
        return this.request("POST", "/_matrix/client/v3/publicRooms", {
            limit: 50,
            filter: search ? { generic_search_term: search } : undefined,
        });
    }

    resolveAlias(alias) {
        return this.request("GET", `/_matrix/client/v3/directory/room/${seg(alias)}`);
    }

    profile(userId) {
        return this.request("GET", `/_matrix/client/v3/profile/${seg(userId)}`);
    }

    // ----- media (shown only when the server has a media repository) -----

    async mediaAvailable() {
        try {
            await this.request("GET", "/_matrix/client/v1/media/config");
            return true;
        } catch {
            return false;
        }
    }

    upload(file) {
        return this.request("POST", "/_matrix/media/v3/upload", undefined, {
            query: { filename: file.name },
            raw: file,
            contentType: file.type || "application/octet-stream",
        });
    }

    /** An `mxc://` URI's content as a blob URL: authenticated media needs the access token. */
    async mediaUrl(mxc) {
        const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc || "");
        if (!match) throw new Error("not an mxc URI");
        const response = await fetch(`${this.baseUrl}/_matrix/client/v1/media/download/${seg(match[1])}/${seg(match[2])}`, {
            headers: { Authorization: `Bearer ${this.session.access_token}` },
        });
        if (!response.ok) throw new MatrixError(response.status, {});
        return URL.createObjectURL(await response.blob());
    }
}
