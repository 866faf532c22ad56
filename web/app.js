// Myelin's built-in web chat: the page's behaviour. Plain DOM, no framework; everything it shows
// comes from the client-server API through ./matrix.js. Text from the network is only ever put
// into the page as text (textContent), never as HTML.

import { Client, MatrixError } from "./matrix.js";

const $ = (id) => document.getElementById(id);

/** Builds an element: h("li", {class: "x", onclick}, "text", child). */
function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value == null || value === false) continue;
        if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
        else if (key === "class") el.className = value;
        else if (key === "dataset") Object.assign(el.dataset, value);
        else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) if (child != null && child !== false) el.append(child);
    return el;
}

const SESSION_KEY = "myelin.session";
const params = new URLSearchParams(location.search);

// ----- state -----

/** Everything known about one room, kept up to date from sync. */
class Room {
    constructor(id) {
        this.id = id;
        this.membership = "join";
        this.state = new Map(); // "type\u0000state_key" → event
        this.timeline = [];
        this.prevBatch = null;
        this.historyDone = false;
        this.unread = 0;
        this.highlights = 0;
        this.typing = [];
        this.receipts = new Map(); // user → event ID of their m.read receipt
        this.heroes = [];
        this.lastTs = 0;
        this.sentReceipt = null;
    }
    get(type, key = "") {
        return this.state.get(`${type}\u0000${key}`);
    }
    setState(event) {
        this.state.set(`${event.type}\u0000${event.state_key}`, event);
    }
    members(membership = "join") {
        const out = [];
        for (const event of this.state.values()) {
            if (event.type === "m.room.member" && event.content?.membership === membership) out.push(event.state_key);
        }
        return out;
    }
    get alias() {
        return this.get("m.room.canonical_alias")?.content?.alias || null;
    }
}

const app = {
    client: null,
    rooms: new Map(),
    presence: new Map(), // user → presence content
    direct: {}, // m.direct account data: user → [room IDs]
    current: null, // open room ID
    pendingRoute: null, // a room to open once it appears in sync
    mediaOk: false,
    blobs: new Map(), // mxc → blob URL
    typingSent: 0,
    typingTimer: null,
};
window.myelinApp = app; // handy in the browser console, and for tests

// ----- names, times -----

const localpart = (userId) => userId.slice(1).split(":")[0];

function displayName(userId, room) {
    const member = room?.get("m.room.member", userId);
    return member?.content?.displayname || localpart(userId);
}

function roomName(room) {
    const name = room.get("m.room.name")?.content?.name;
    if (name) return name;
    if (room.alias) return room.alias;
    const others = (room.heroes.length ? room.heroes : [...room.members("join"), ...room.members("invite")])
        .filter((u) => u !== app.client.userId);
    if (others.length) return others.slice(0, 3).map((u) => displayName(u, room)).join(", ");
    if (room.membership === "invite") {
        const inviter = room.get("m.room.member", app.client.userId)?.sender;
        if (inviter) return displayName(inviter, room);
    }
    return "Empty room";
}

function initials(text) {
    const clean = text.replace(/^[#@!]/, "").trim();
    return (clean[0] || "?").toUpperCase();
}

/** A stable hue per user, so each person keeps a colour. */
function hue(text) {
    let n = 0;
    for (const c of text) n = (n * 31 + c.codePointAt(0)) % 360;
    return n;
}

function avatar(text, key) {
    const el = h("span", { class: "avatar", "aria-hidden": "true" }, initials(text));
    el.style.setProperty("--hue", hue(key || text));
    return el;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

/** The time of day for today's events, with the date for older ones; the full date on hover. */
function timeEl(ts) {
    const date = new Date(ts);
    const today = date.toDateString() === new Date().toDateString();
    return h("time", { datetime: date.toISOString(), title: fullFormat.format(date) }, (today ? timeFormat : dayFormat).format(date));
}

function toast(text, error = false) {
    const el = $("toast");
    el.textContent = text;
    el.classList.toggle("error", error);
    el.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => el.classList.remove("show"), 4000);
}

const errorText = (e) => (e instanceof MatrixError ? e.message + (e.errcode ? ` (${e.errcode})` : "") : String(e.message || e));

// ----- signing in -----

let registering = false;
let registrationFlows = null;

async function showAuth() {
    $("app").hidden = true;
    $("auth").hidden = false;
    $("auth-server").textContent = `Chat on ${location.host}`;
    setAuthMode(registering);
    $("auth-user").focus();
}

function setAuthMode(register) {
    registering = register;
    $("tab-login").setAttribute("aria-selected", String(!register));
    $("tab-register").setAttribute("aria-selected", String(register));
    // Roving focus: only the selected tab is in the tab order; arrows move between them.
    $("tab-login").tabIndex = register ? -1 : 0;
    $("tab-register").tabIndex = register ? 0 : -1;
    $("auth-form").setAttribute("aria-labelledby", register ? "tab-register" : "tab-login");
    $("auth-submit").textContent = register ? "Create account" : "Sign in";
    $("auth-password").autocomplete = register ? "new-password" : "current-password";
    $("auth-error").textContent = "";
    $("auth-token-row").hidden = true;
    if (register) {
        // Ask the server once whether it wants a registration token, to show the field up front
        // (each ask starts an authentication session, which registration rate limits count).
        registrationFlows ??= new Client().registrationFlows();
        registrationFlows.then((flows) => {
            const needsToken = flows.length && flows.every((f) => f.stages.includes("m.login.registration_token"));
            if (registering) $("auth-token-row").hidden = !needsToken;
        });
    }
}

$("tab-login").addEventListener("click", () => setAuthMode(false));
$("tab-register").addEventListener("click", () => setAuthMode(true));
// Arrow keys move between the two tabs, as the tab pattern expects.
for (const tab of [$("tab-login"), $("tab-register")]) {
    tab.addEventListener("keydown", (e) => {
        if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
            const other = tab.id === "tab-login" ? $("tab-register") : $("tab-login");
            other.focus();
            other.click();
        }
    });
}

$("auth-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const user = $("auth-user").value.trim();
    const password = $("auth-password").value;
    const error = $("auth-error");
    error.textContent = "";
    if (!user || !password) {
        error.textContent = "Enter a username and a password.";
        return;
    }
    const client = new Client();
    $("auth-submit").disabled = true;
    try {
        if (registering) await client.register(user, password, $("auth-token").value.trim() || undefined);
        else await client.login(user, password);
        localStorage.setItem(SESSION_KEY, JSON.stringify(client.session));
        $("auth-password").value = "";
        startChat(client);
    } catch (err) {
        if (err.errcode === "M_MISSING_TOKEN") $("auth-token-row").hidden = false;
        error.textContent = errorText(err);
    } finally {
        $("auth-submit").disabled = false;
    }
});

// ----- the chat -----

function startChat(client) {
    app.client = client;
    app.rooms.clear();
    app.current = null;
    $("auth").hidden = true;
    $("app").hidden = false;
    $("me-name").textContent = localpart(client.userId);
    $("me-id").textContent = client.userId;
    $("me-avatar").replaceWith(Object.assign(avatar(client.userId), { id: "me-avatar" }));
    $("new-room-alias").nextElementSibling.textContent = `:${client.serverName}`;
    client.profile(client.userId).then((p) => p.displayname && ($("me-name").textContent = p.displayname)).catch(() => {});
    client.onSync = onSync;
    client.onStatus = (status, transport) => {
        const el = $("connection");
        el.dataset.status = status;
        el.dataset.transport = transport;
        el.title = status === "connected" ? `Connected (${transport})` : "Reconnecting…";
        el.textContent = status === "connected" ? "" : "Reconnecting…";
    };
    client.onLoggedOut = () => {
        localStorage.removeItem(SESSION_KEY);
        toast("Your session ended; sign in again.", true);
        showAuth();
    };
    client.start({ preferPoll: params.get("transport") === "long-poll" });
    client.mediaAvailable().then((ok) => {
        app.mediaOk = ok;
        $("btn-upload").hidden = !ok;
    });
    updateNotifyButton();
    showRoom(null);
    if (window.matchMedia("(max-width: 700px)").matches) toggleSidebar(true);
}

function onSync(data, initial) {
    for (const event of data.presence?.events || []) app.presence.set(event.sender, event.content || {});
    for (const event of data.account_data?.events || []) if (event.type === "m.direct") app.direct = event.content || {};

    const rooms = data.rooms || {};
    const changed = new Set();
    for (const [id, update] of Object.entries(rooms.join || {})) {
        let room = app.rooms.get(id);
        if (!room || room.membership !== "join") {
            room = Object.assign(new Room(id), { heroes: room?.heroes || [] });
            app.rooms.set(id, room);
        }
        room.membership = "join";
        for (const event of update.state?.events || []) room.setState(event);
        const timeline = update.timeline || {};
        const events = timeline.events || [];
        const fresh = [];
        if (timeline.limited || initial) {
            room.timeline = [];
            room.prevBatch = timeline.prev_batch;
            room.historyDone = false;
            if (id === app.current) fresh.reset = true;
        }
        for (const event of events) {
            if (event.state_key !== undefined) room.setState(event);
            if (event.type === "m.room.member" && event.state_key === app.client.userId && event.content?.displayname) {
                $("me-name").textContent = event.content.displayname;
            }
            if (mergeEcho(room, event)) continue;
            room.timeline.push(event);
            fresh.push(event);
            room.lastTs = Math.max(room.lastTs, event.origin_server_ts || 0);
            if (!initial) maybeNotify(room, event);
        }
        for (const event of update.ephemeral?.events || []) {
            if (event.type === "m.typing") room.typing = event.content.user_ids || [];
            if (event.type === "m.receipt") {
                for (const [eventId, kinds] of Object.entries(event.content)) {
                    for (const user of Object.keys(kinds["m.read"] || {})) room.receipts.set(user, eventId);
                }
            }
        }
        if (update.summary?.["m.heroes"]) room.heroes = update.summary["m.heroes"];
        if (update.unread_notifications) {
            room.unread = update.unread_notifications.notification_count || 0;
            room.highlights = update.unread_notifications.highlight_count || 0;
        }
        if (id === app.current) {
            if (fresh.reset) renderTimeline();
            else appendEvents(fresh);
            renderReceipts();
            renderTyping();
            renderMembers();
            renderRoomHead();
        }
        changed.add(id);
    }
    for (const [id, update] of Object.entries(rooms.invite || {})) {
        const room = new Room(id);
        room.membership = "invite";
        for (const event of update.invite_state?.events || []) room.setState(event);
        app.rooms.set(id, room);
        const me = room.get("m.room.member", app.client.userId);
        if (!initial && me) notify(`${displayName(me.sender, room)} invited you`, roomName(room), id);
    }
    for (const id of Object.keys(rooms.leave || {})) {
        app.rooms.delete(id);
        if (id === app.current) showRoom(null);
    }
    if (data.presence?.events?.length && app.current) renderMembers();

    if (app.pendingRoute) {
        const route = app.pendingRoute;
        const room = findRoom(route);
        if (room?.membership === "join") {
            app.pendingRoute = null;
            showRoom(room.id);
        }
    } else if (initial) {
        route();
        // Nothing asked for: open the liveliest room (on a phone the room list stays in front).
        const first = [...app.rooms.values()].filter((r) => r.membership === "join").sort((a, b) => b.lastTs - a.lastTs)[0];
        if (!app.current && first && !location.hash.startsWith("#/room/")) showRoom(first.id, { focus: false });
    }
    if (app.current && !app.rooms.has(app.current)) showRoom(null);
    markRead();
    renderRoomList();
}

/** A synced event of ours replaces its local echo (matched by transaction or event ID). */
function mergeEcho(room, event) {
    const txn = event.unsigned?.transaction_id;
    const index = room.timeline.findIndex((e) => e.pending && ((txn && e.txn === txn) || e.event_id === event.event_id));
    if (index < 0) return room.timeline.some((e) => e.event_id === event.event_id);
    const echo = room.timeline[index];
    room.timeline[index] = event;
    const li = document.querySelector(`#timeline li[data-txn="${CSS.escape(echo.txn)}"]`);
    if (li) {
        li.classList.remove("pending", "failed");
        li.dataset.eventId = event.event_id;
        li.querySelector(".state")?.remove();
    }
    return true;
}

function isMention(room, event) {
    const me = app.client.userId;
    if (event.content?.["m.mentions"]?.user_ids?.includes(me)) return true;
    const body = String(event.content?.body || "").toLowerCase();
    const name = displayName(me, room).toLowerCase();
    return body.includes(localpart(me).toLowerCase()) || (name.length > 2 && body.includes(name));
}

function maybeNotify(room, event) {
    if (event.type !== "m.room.message" || event.sender === app.client.userId) return;
    const elsewhere = room.id !== app.current || document.hidden;
    const mention = isMention(room, event);
    if (!(elsewhere && (room.id !== app.current || mention))) return;
    const who = displayName(event.sender, room);
    notify(mention ? `${who} mentioned you in ${roomName(room)}` : `${who} in ${roomName(room)}`, event.content.body || "", room.id);
}

function notify(title, body, roomId) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const n = new Notification(title, { body: String(body).slice(0, 200), tag: roomId, icon: "favicon.svg" });
    n.onclick = () => {
        window.focus();
        location.hash = `#/room/${roomId}`;
        n.close();
    };
}

function updateNotifyButton() {
    $("btn-notify").hidden = !("Notification" in window) || Notification.permission !== "default";
}
$("btn-notify").addEventListener("click", async () => {
    await Notification.requestPermission();
    updateNotifyButton();
});

// ----- room list -----

function renderRoomList() {
    const rooms = [...app.rooms.values()];
    const invites = rooms.filter((r) => r.membership === "invite");
    const joined = rooms.filter((r) => r.membership === "join").sort((a, b) => b.lastTs - a.lastTs);
    $("invites-title").hidden = invites.length === 0;
    $("invites").replaceChildren(...invites.map((room) => {
        const inviter = room.get("m.room.member", app.client.userId)?.sender;
        return h("li", { class: "invite", dataset: { roomId: room.id } },
            avatar(roomName(room), room.id),
            h("span", { class: "room-label" }, h("span", { class: "room-name" }, roomName(room)),
                inviter && h("small", { class: "muted" }, `from ${displayName(inviter, room)}`)),
            h("span", { class: "invite-buttons" },
                h("button", { type: "button", class: "small primary", onclick: () => acceptInvite(room) , "aria-label": `Accept invite to ${roomName(room)}` }, "Accept"),
                h("button", { type: "button", class: "small", onclick: () => declineInvite(room), "aria-label": `Decline invite to ${roomName(room)}` }, "Decline")));
    }));
    $("rooms").replaceChildren(...joined.map((room) => {
        const name = roomName(room);
        const count = room.id === app.current ? 0 : room.unread;
        const last = [...room.timeline].reverse().find((e) => e.type === "m.room.message");
        return h("li", {},
            h("a", {
                href: `#/room/${room.alias || room.id}`,
                class: "room-link" + (count ? " unread" : ""),
                "aria-current": room.id === app.current ? "page" : null,
                dataset: { roomId: room.id },
            },
            avatar(name, room.id),
            h("span", { class: "room-label" },
                h("span", { class: "room-name" }, name),
                last && h("small", { class: "muted preview" }, `${displayName(last.sender, room)}: ${last.content?.body ?? ""}`)),
            count ? h("span", { class: "badge" + (room.highlights ? " highlight" : ""), "aria-label": `${count} unread` }, String(count)) : null));
    }));
    const total = joined.reduce((n, r) => n + (r.id === app.current ? 0 : r.unread), 0);
    document.title = total ? `(${total}) Myelin chat` : "Myelin chat";
}

async function acceptInvite(room) {
    try {
        await app.client.join(room.id);
        const me = room.get("m.room.member", app.client.userId);
        if (me?.content?.is_direct) await addDirect(me.sender, room.id);
        app.pendingRoute = room.id;
        location.hash = `#/room/${room.id}`;
    } catch (e) {
        toast(errorText(e), true);
    }
}

async function declineInvite(room) {
    try {
        await app.client.leave(room.id);
        app.rooms.delete(room.id);
        renderRoomList();
    } catch (e) {
        toast(errorText(e), true);
    }
}

// ----- routing: #/room/<room ID or alias> -----

function findRoom(idOrAlias) {
    if (app.rooms.has(idOrAlias)) return app.rooms.get(idOrAlias);
    for (const room of app.rooms.values()) {
        if (room.alias === idOrAlias) return room;
        if (room.get("m.room.canonical_alias")?.content?.alt_aliases?.includes(idOrAlias)) return room;
    }
    return null;
}

function route() {
    if (!app.client) return;
    const match = /^#\/room\/(.+)$/.exec(location.hash);
    if (!match) return;
    let target = decodeURIComponent(match[1]);
    if (target.startsWith("#") && !target.includes(":")) target += `:${app.client.serverName}`;
    const room = findRoom(target);
    if (room?.membership === "join") return showRoom(room.id);
    showJoinPanel(target);
}

window.addEventListener("hashchange", route);

function showJoinPanel(target) {
    showRoom(null);
    $("room-name").textContent = target;
    $("join-text").textContent = `You are not in ${target} yet.`;
    $("join-panel").hidden = false;
    $("empty").hidden = true;
    const button = $("btn-join-room");
    button.onclick = () => joinRoom(target);
    button.focus();
    if (target.startsWith("#")) {
        app.client.resolveAlias(target).then(({ room_id }) => {
            if (app.rooms.get(room_id)?.membership === "join") showRoom(room_id);
        }, () => ($("join-text").textContent = `There is no room ${target}.`));
    }
}

async function joinRoom(target) {
    try {
        const { room_id } = await app.client.join(target);
        app.pendingRoute = room_id;
        $("join-panel").hidden = true;
        if (app.rooms.get(room_id)?.membership === "join") {
            app.pendingRoute = null;
            showRoom(room_id);
        }
        return room_id;
    } catch (e) {
        toast(errorText(e), true);
        throw e;
    }
}

// ----- the open room -----

function showRoom(id, { focus = true } = {}) {
    if (app.current && app.current !== id) sendTyping(false);
    app.current = id;
    const room = id && app.rooms.get(id);
    $("join-panel").hidden = true;
    $("composer").hidden = !room;
    $("btn-link").hidden = !room;
    $("btn-members").hidden = !room;
    $("empty").hidden = !!room;
    if (!room) {
        $("room-name").textContent = "Welcome";
        $("room-topic").textContent = "";
        $("timeline").replaceChildren();
        $("typing").textContent = "";
        $("btn-older").hidden = true;
        $("members").hidden = true;
        renderRoomList();
        return;
    }
    renderRoomHead();
    renderTimeline();
    renderTyping();
    renderMembers();
    renderRoomList();
    markRead();
    if (!focus) return;
    if (window.matchMedia("(max-width: 700px)").matches) toggleSidebar(false);
    $("message").focus();
}

function renderRoomHead() {
    const room = app.rooms.get(app.current);
    if (!room) return;
    $("room-name").textContent = roomName(room);
    const topic = room.get("m.room.topic")?.content?.topic;
    const alias = room.alias;
    $("room-topic").replaceChildren(...[alias && h("code", {}, alias), topic && ` ${topic}`].filter(Boolean));
}

function renderTimeline() {
    const room = app.rooms.get(app.current);
    const list = $("timeline");
    list.replaceChildren();
    if (!room) return;
    appendEvents(room.timeline, true);
    $("btn-older").hidden = room.historyDone || !room.prevBatch;
    scrollToBottom();
    // A short room should fetch history until it fills the view.
    if (room.timeline.filter(visible).length < 15 && !room.historyDone && room.prevBatch) loadOlder();
}

const wrap = () => $("timeline-wrap");
const nearBottom = () => wrap().scrollHeight - wrap().scrollTop - wrap().clientHeight < 80;
const scrollToBottom = () => (wrap().scrollTop = wrap().scrollHeight);

function visible(event) {
    return ["m.room.message", "m.room.member", "m.room.name", "m.room.topic", "m.room.create"].includes(event.type);
}

function appendEvents(events, quiet = false) {
    if (!events.length) return;
    const stick = quiet || nearBottom();
    const list = $("timeline");
    for (const event of events) {
        if (!visible(event)) continue;
        const li = renderEvent(event, list.lastElementChild);
        if (li) list.append(li);
    }
    if (stick || events.some((e) => e.sender === app.client.userId)) scrollToBottom();
    renderReceipts();
}

/** One timeline entry; messages by the same sender within five minutes are grouped. */
function renderEvent(event, previous) {
    const room = app.rooms.get(app.current);
    const sender = event.sender;
    const name = displayName(sender, room);
    const attrs = {
        dataset: { eventId: event.event_id || "", sender, ts: String(event.origin_server_ts || 0) },
    };
    if (event.pending) attrs.dataset.txn = event.txn;
    if (event.type !== "m.room.message") {
        const text = describeState(event, name, room);
        if (!text) return null;
        return h("li", { ...attrs, class: "notice" }, h("span", {}, text), " ", timeEl(event.origin_server_ts));
    }
    const grouped = previous && previous.classList.contains("msg") && previous.dataset.sender === sender &&
        event.origin_server_ts - Number(previous.dataset.ts) < 5 * 60_000;
    const li = h("li", { ...attrs, class: "msg" + (grouped ? " grouped" : "") + (event.pending ? " pending" : "") + (sender === app.client.userId ? " mine" : "") },
        grouped ? h("span", { class: "avatar-space" }) : avatar(name, sender),
        h("div", { class: "msg-main" },
            h("div", { class: "msg-head" + (grouped ? " sr-only" : "") },
                h("span", { class: "sender" }, name), " ", timeEl(event.origin_server_ts)),
            renderBody(event),
            event.pending && h("span", { class: "state muted" }, "sending…")));
    if (grouped) li.querySelector(".msg-main").append(h("span", { class: "grouped-time", "aria-hidden": "true" }, timeFormat.format(new Date(event.origin_server_ts))));
    li.style.setProperty("--hue", hue(sender));
    return li;
}

function describeState(event, name, room) {
    const c = event.content || {};
    switch (event.type) {
        case "m.room.create":
            return `${name} created the room`;
        case "m.room.name":
            return c.name ? `${name} named the room “${c.name}”` : null;
        case "m.room.topic":
            return c.topic ? `${name} set the topic: ${c.topic}` : null;
        case "m.room.member": {
            const target = c.displayname || localpart(event.state_key);
            const before = event.unsigned?.prev_content?.membership;
            if (c.membership === "join" && before === "join") return null; // profile changes
            if (c.membership === "join") return `${target} joined`;
            if (c.membership === "invite") return `${name} invited ${target}`;
            if (c.membership === "leave") return event.sender === event.state_key ? `${target} left` : `${name} removed ${target}`;
            if (c.membership === "ban") return `${name} banned ${target}`;
            return null;
        }
    }
    return null;
}

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'”]/g;

/** Message text with links made clickable, all as text nodes and anchors. */
function linkify(text) {
    const out = [];
    let last = 0;
    for (const match of text.matchAll(URL_PATTERN)) {
        out.push(text.slice(last, match.index));
        out.push(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer" }, match[0]));
        last = match.index + match[0].length;
    }
    out.push(text.slice(last));
    return out;
}

function renderBody(event) {
    const c = event.content || {};
    const room = app.rooms.get(app.current);
    if (c.msgtype === "m.image" && c.url) {
        const img = h("img", { alt: c.body || "image", class: "inline-image", loading: "lazy" });
        if (c.info?.w && c.info?.h) {
            img.width = Math.min(c.info.w, 320);
            img.height = Math.round((img.width / c.info.w) * c.info.h);
        }
        loadMedia(c.url).then((url) => (img.src = url), () => img.replaceWith(h("span", { class: "muted" }, `[image ${c.body || ""} unavailable]`)));
        return h("div", { class: "body" }, img);
    }
    if (c.msgtype === "m.file" && c.url) {
        return h("div", { class: "body" }, h("button", {
            type: "button", class: "file",
            onclick: async () => {
                try {
                    const a = h("a", { href: await loadMedia(c.url), download: c.body || "file" });
                    document.body.append(a);
                    a.click();
                    a.remove();
                } catch (e) {
                    toast(errorText(e), true);
                }
            },
        }, `⬇ ${c.body || "file"}`));
    }
    const body = String(c.body ?? "");
    const mention = event.sender !== app.client.userId && room && event.type === "m.room.message" && isMention(room, event);
    const text = c.msgtype === "m.emote" ? `* ${displayName(event.sender, room)} ${body}` : body;
    return h("div", { class: "body" + (mention ? " mention" : "") + (c.msgtype === "m.notice" ? " muted" : "") }, linkify(text));
}

function loadMedia(mxc) {
    if (!app.blobs.has(mxc)) {
        const promise = app.client.mediaUrl(mxc);
        promise.catch(() => app.blobs.delete(mxc));
        app.blobs.set(mxc, promise);
    }
    return app.blobs.get(mxc);
}

/**
 * "Seen by": each other member's read receipt, shown under the latest message by someone else
 * that it covers (a receipt on one's own message says nothing new about it).
 */
function renderReceipts() {
    const room = app.rooms.get(app.current);
    for (const el of document.querySelectorAll("#timeline .receipts")) el.remove();
    if (!room) return;
    const byElement = new Map();
    for (const [user, eventId] of room.receipts) {
        if (user === app.client.userId) continue;
        let index = room.timeline.findIndex((e) => e.event_id === eventId);
        for (; index >= 0; index--) {
            const event = room.timeline[index];
            if (event.type !== "m.room.message" || event.sender === user || !event.event_id) continue;
            const li = document.querySelector(`#timeline li[data-event-id="${CSS.escape(event.event_id)}"]`);
            if (!li) break;
            if (!byElement.has(li)) byElement.set(li, []);
            byElement.get(li).push(user);
            break;
        }
    }
    for (const [li, readers] of byElement) {
        const names = readers.map((u) => displayName(u, room));
        (li.querySelector(".msg-main") || li).append(h("div", { class: "receipts", title: `Seen by ${names.join(", ")}` },
            ...readers.slice(0, 5).map((u) => avatar(displayName(u, room), u)),
            h("span", { class: "muted" }, ` Seen by ${names.join(", ")}`)));
    }
}

function renderTyping() {
    const room = app.rooms.get(app.current);
    const others = (room?.typing || []).filter((u) => u !== app.client.userId).map((u) => displayName(u, room));
    $("typing").textContent =
        others.length === 0 ? "" :
        others.length === 1 ? `${others[0]} is typing…` :
        others.length === 2 ? `${others[0]} and ${others[1]} are typing…` : "Several people are typing…";
}

function isOnline(user) {
    if (user === app.client.userId) return true;
    return app.presence.get(user)?.presence === "online";
}

function renderMembers() {
    const room = app.rooms.get(app.current);
    if (!room) return;
    const members = room.members("join").sort((a, b) => (isOnline(b) - isOnline(a)) || displayName(a, room).localeCompare(displayName(b, room)));
    $("online-count").textContent = String(members.filter(isOnline).length);
    $("member-list").replaceChildren(...members.map((user) => {
        const presence = isOnline(user) ? "online" : app.presence.get(user)?.presence || "offline";
        return h("li", { class: "member", dataset: { user, presence } },
            avatar(displayName(user, room), user),
            h("span", { class: "member-name" }, displayName(user, room), h("small", { class: "muted" }, user)),
            h("span", { class: `dot ${presence}`, title: presence }, h("span", { class: "sr-only" }, presence)));
    }));
}

/** Tells the server (and so the others) what we have read, once per event, while we look. */
function markRead() {
    const room = app.rooms.get(app.current);
    if (!room || document.hidden) return;
    const last = [...room.timeline].reverse().find((e) => e.event_id && !e.pending);
    room.unread = 0;
    room.highlights = 0;
    if (!last || room.sentReceipt === last.event_id) return;
    room.sentReceipt = last.event_id;
    app.client.readMarkers(room.id, last.event_id).catch(() => (room.sentReceipt = null));
}
document.addEventListener("visibilitychange", () => {
    markRead();
    renderRoomList();
});
window.addEventListener("focus", markRead);

async function loadOlder() {
    const room = app.rooms.get(app.current);
    if (!room || room.loading || room.historyDone || !room.prevBatch) return;
    room.loading = true;
    $("btn-older").disabled = true;
    try {
        const page = await app.client.messages(room.id, room.prevBatch);
        if (app.current !== room.id) return;
        const events = (page.chunk || []).reverse().filter((e) => !room.timeline.some((t) => t.event_id === e.event_id));
        for (const event of page.state || []) if (!room.get(event.type, event.state_key)) room.setState(event);
        room.timeline.unshift(...events);
        room.prevBatch = page.end;
        room.historyDone = !page.end || !page.chunk?.length;
        const before = wrap().scrollHeight - wrap().scrollTop;
        const list = $("timeline");
        const fragment = document.createDocumentFragment();
        let previous = null;
        for (const event of events) {
            if (!visible(event)) continue;
            const li = renderEvent(event, previous);
            if (li) {
                fragment.append(li);
                previous = li;
            }
        }
        // The first message after the page may now be grouped with it: render it again.
        const first = list.firstElementChild;
        list.prepend(fragment);
        if (first && first.classList.contains("msg")) {
            const event = room.timeline.find((e) => e.event_id === first.dataset.eventId);
            if (event) first.replaceWith(renderEvent(event, first.previousElementSibling));
        }
        wrap().scrollTop = wrap().scrollHeight - before;
        renderReceipts();
        $("btn-older").hidden = room.historyDone;
    } catch (e) {
        toast(errorText(e), true);
    } finally {
        room.loading = false;
        $("btn-older").disabled = false;
    }
}
$("btn-older").addEventListener("click", loadOlder);
$("timeline-wrap").addEventListener("scroll", () => {
    if (wrap().scrollTop < 60) loadOlder();
}, { passive: true });

// ----- composing -----

function sendTyping(typing) {
    if (!app.current) return;
    const now = Date.now();
    if (typing && now - app.typingSent < 10_000) return;
    if (!typing && !app.typingSent) return;
    app.typingSent = typing ? now : 0;
    app.client.typing(app.current, typing).catch(() => {});
}

$("message").addEventListener("input", () => {
    const box = $("message");
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight, 160) + "px";
    if (box.value.trim()) {
        sendTyping(true);
        clearTimeout(app.typingTimer);
        app.typingTimer = setTimeout(() => sendTyping(false), 5000);
    } else {
        sendTyping(false);
    }
});

$("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
    }
});

$("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("message").value.trim();
    if (!text || !app.current) return;
    $("message").value = "";
    $("message").style.height = "auto";
    clearTimeout(app.typingTimer);
    sendTyping(false);
    const content = { msgtype: "m.text", body: text };
    if (text.startsWith("/me ")) Object.assign(content, { msgtype: "m.emote", body: text.slice(4) });
    sendEvent(app.current, content);
});

/** Sends with a local echo, shown at once and confirmed (or marked failed) later. */
function sendEvent(roomId, content) {
    const room = app.rooms.get(roomId);
    const txn = app.client.newTxnId();
    const echo = { type: "m.room.message", sender: app.client.userId, content, origin_server_ts: Date.now(), pending: true, txn, event_id: null };
    room.timeline.push(echo);
    if (roomId === app.current) appendEvents([echo]);
    const attempt = () => app.client.send(roomId, "m.room.message", content, txn).then(({ event_id }) => {
        if (echo.pending) echo.event_id = event_id;
        const li = document.querySelector(`#timeline li[data-txn="${CSS.escape(txn)}"]`);
        if (li) li.dataset.eventId = event_id;
        renderReceipts();
    }, (err) => {
        const li = document.querySelector(`#timeline li[data-txn="${CSS.escape(txn)}"]`);
        if (!li) return;
        li.classList.add("failed");
        const state = li.querySelector(".state");
        state.replaceChildren(`not sent: ${errorText(err)} `, h("button", {
            type: "button", class: "small",
            onclick: () => {
                li.classList.remove("failed");
                state.textContent = "sending…";
                attempt();
            },
        }, "Retry"));
    });
    attempt();
}

$("btn-upload").addEventListener("click", () => $("upload").click());
$("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    $("upload").value = "";
    if (!file || !app.current) return;
    const roomId = app.current;
    toast(`Uploading ${file.name}…`);
    try {
        const { content_uri } = await app.client.upload(file);
        const info = { mimetype: file.type || "application/octet-stream", size: file.size };
        let msgtype = "m.file";
        if (file.type.startsWith("image/")) {
            msgtype = "m.image";
            try {
                const bitmap = await createImageBitmap(file);
                Object.assign(info, { w: bitmap.width, h: bitmap.height });
                bitmap.close();
            } catch {}
        }
        sendEvent(roomId, { msgtype, body: file.name, url: content_uri, info });
        toast(`Sent ${file.name}`);
    } catch (e) {
        toast(`Upload failed: ${errorText(e)}`, true);
    }
});

// ----- dialogs -----

function openDialog(id) {
    const dialog = $(id);
    dialog.querySelector(".error").textContent = "";
    dialog.showModal();
    dialog.querySelector("input")?.focus();
}

for (const dialog of document.querySelectorAll("dialog")) {
    dialog.querySelector(".cancel")?.addEventListener("click", () => dialog.close());
}

/** A dialog form's submit runs `action`; an error stays in the dialog. */
function onDialogSubmit(formId, action) {
    const form = $(formId);
    form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const dialog = form.closest("dialog");
        const error = form.querySelector(".error");
        const submit = form.querySelector("[type=submit]");
        error.textContent = "";
        if (submit) submit.disabled = true;
        try {
            await action(form);
            dialog.close();
        } catch (err) {
            error.textContent = errorText(err);
        } finally {
            if (submit) submit.disabled = false;
        }
    });
}

$("btn-new-room").addEventListener("click", () => {
    $("form-new-room").reset();
    openDialog("dlg-new-room");
});
onDialogSubmit("form-new-room", async () => {
    const name = $("new-room-name").value.trim();
    if (!name) throw new Error("A room needs a name.");
    const isPublic = document.querySelector("input[name=new-room-visibility]:checked").value === "public";
    const code = $("new-room-alias").value.trim().replace(/^#/, "").toLowerCase();
    const body = { name, preset: isPublic ? "public_chat" : "private_chat", visibility: isPublic ? "public" : "private" };
    const topic = $("new-room-topic").value.trim();
    if (topic) body.topic = topic;
    if (code) body.room_alias_name = code;
    const { room_id } = await app.client.createRoom(body);
    app.pendingRoute = room_id;
    location.hash = `#/room/${code ? `#${code}:${app.client.serverName}` : room_id}`;
    if (code) toast(`Room code: #${code}:${app.client.serverName}`);
});

$("btn-join").addEventListener("click", () => {
    $("form-join").reset();
    openDialog("dlg-join");
});
onDialogSubmit("form-join", async () => {
    let code = $("join-code").value.trim();
    const link = /#\/room\/(.+)$/.exec(code);
    if (link) code = decodeURIComponent(link[1]);
    if (!/^[#!]/.test(code)) code = `#${code}`;
    if (code.startsWith("#") && !code.includes(":")) code += `:${app.client.serverName}`;
    const existing = findRoom(code);
    if (existing?.membership === "join") {
        location.hash = `#/room/${code}`;
        return;
    }
    const roomId = await app.client.join(code).then((r) => r.room_id);
    app.pendingRoute = roomId;
    location.hash = `#/room/${code}`;
});

let directorySearch = 0;
async function loadDirectory() {
    const ticket = ++directorySearch;
    const list = $("directory-list");
    try {
        const { chunk = [] } = await app.client.publicRooms($("directory-search").value.trim());
        if (ticket !== directorySearch) return;
        if (!chunk.length) return list.replaceChildren(h("li", { class: "muted" }, "No public rooms found."));
        list.replaceChildren(...chunk.map((r) => {
            const name = r.name || r.canonical_alias || r.room_id;
            const joined = app.rooms.get(r.room_id)?.membership === "join";
            return h("li", {},
                avatar(name, r.room_id),
                h("span", { class: "room-label" }, h("strong", {}, name),
                    h("small", { class: "muted" }, [r.canonical_alias, `${r.num_joined_members} member${r.num_joined_members === 1 ? "" : "s"}`, r.topic].filter(Boolean).join(" · "))),
                h("button", {
                    type: "button", class: "small" + (joined ? "" : " primary"), "aria-label": `${joined ? "Open" : "Join"} ${name}`,
                    onclick: async () => {
                        try {
                            if (!joined) await joinRoom(r.room_id);
                            $("dlg-directory").close();
                            location.hash = `#/room/${r.canonical_alias || r.room_id}`;
                        } catch {}
                    },
                }, joined ? "Open" : "Join"));
        }));
    } catch (e) {
        $("form-directory").querySelector(".error").textContent = errorText(e);
    }
}
$("btn-directory").addEventListener("click", () => {
    $("directory-search").value = "";
    openDialog("dlg-directory");
    loadDirectory();
});
let searchTimer;
$("directory-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadDirectory, 250);
});

async function addDirect(user, roomId) {
    const rooms = new Set(app.direct[user] || []);
    rooms.add(roomId);
    app.direct = { ...app.direct, [user]: [...rooms] };
    await app.client.request("PUT", `/_matrix/client/v3/user/${encodeURIComponent(app.client.userId)}/account_data/m.direct`, app.direct);
}

$("btn-dm").addEventListener("click", () => {
    $("form-dm").reset();
    openDialog("dlg-dm");
});
onDialogSubmit("form-dm", async () => {
    let user = $("dm-user").value.trim();
    if (!user.startsWith("@")) user = `@${user}`;
    if (!user.includes(":")) user += `:${app.client.serverName}`;
    if (user === app.client.userId) throw new Error("That is you.");
    // An existing chat with them, if we are still in it.
    const existing = (app.direct[user] || []).map((id) => app.rooms.get(id)).find((r) => r?.membership === "join");
    if (existing) {
        location.hash = `#/room/${existing.id}`;
        return;
    }
    await app.client.profile(user).catch(() => {
        throw new Error(`There is no user ${user}.`);
    });
    const { room_id } = await app.client.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [user] });
    await addDirect(user, room_id);
    app.pendingRoute = room_id;
    location.hash = `#/room/${room_id}`;
});

// ----- header buttons, phone layout -----

$("btn-link").addEventListener("click", async () => {
    const room = app.rooms.get(app.current);
    if (!room) return;
    const link = `${location.origin}/#/room/${room.alias || room.id}`;
    try {
        await navigator.clipboard.writeText(link);
        toast(`Link copied: ${link}`);
    } catch {
        toast(link);
    }
});

function toggleSidebar(open) {
    $("sidebar").classList.toggle("open", open);
    $("btn-menu").setAttribute("aria-expanded", String(open));
}
$("btn-menu").addEventListener("click", () => toggleSidebar(!$("sidebar").classList.contains("open")));
$("rooms").addEventListener("click", (e) => {
    if (e.target.closest("a") && window.matchMedia("(max-width: 700px)").matches) toggleSidebar(false);
});

$("btn-members").addEventListener("click", () => {
    const show = $("members").hidden;
    $("members").hidden = !show;
    $("btn-members").setAttribute("aria-expanded", String(show));
});

document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("sidebar").classList.contains("open") && window.matchMedia("(max-width: 700px)").matches) toggleSidebar(false);
});

$("btn-logout").addEventListener("click", async () => {
    try {
        await app.client.logout();
    } catch {}
    localStorage.removeItem(SESSION_KEY);
    app.client = null;
    app.rooms.clear();
    location.hash = "";
    showAuth();
});

// ----- start -----

const saved = (() => {
    try {
        return JSON.parse(localStorage.getItem(SESSION_KEY));
    } catch {
        return null;
    }
})();
if (saved?.access_token) startChat(new Client(saved));
else showAuth();
