// The built-in web client (web/, served at /) in a real browser: Debian's chromium driven by
// playwright-core, two browser contexts as two people, against a real Myelin. Screenshots go to
// tests/e2e/web/screenshots/ (ignored by git).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { SERVER_NAME, startMyelin } from "../js/server.mjs";

const shots = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
mkdirSync(shots, { recursive: true });
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PASSWORD = "correct horse battery staple";
/** "Within a second", the issue's bar for real time; generous enough for a loaded CI machine. */
const REALTIME_MS = 1000;

let server;
let browser;
const errors = []; // page errors and console errors of every page: the test fails on any

before(async () => {
    server = await startMyelin({ MYELIN_REGISTRATION__AUTO_JOIN_ROOMS: "#general" });
    browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Pages fulfilled by the test (WEB_FROM_DISK) count as public: let them reach loopback.
            ...(process.env.WEB_FROM_DISK ? ["--disable-features=LocalNetworkAccessChecks"] : []),
        ],
        timeout: 60_000,
    });
});

after(async () => {
    await browser?.close(); // ends chromium's processes
    await server?.stop();
});

/** A browser context (one person), with Notification calls recorded in `window.__notes`. */
async function person(options = {}) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
    await context.grantPermissions(["notifications"], { origin: server.url });
    await context.addInitScript(() => {
        window.__notes = [];
        const Real = window.Notification;
        window.Notification = class extends EventTarget {
            static permission = "granted";
            static requestPermission = async () => "granted";
            constructor(title, options) {
                super();
                window.__notes.push({ title, body: options?.body });
            }
            close() {}
        };
        void Real;
    });
    await serveFromDisk(context);
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`${e.message}`));
    page.on("console", (m) => m.type() === "error" && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));
    return { context, page };
}

async function registerInUi(page, username, { token, path = "/" } = {}) {
    await page.goto(server.url + path);
    await page.getByRole("tab", { name: "Create account" }).click();
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(PASSWORD);
    if (token) {
        await page.getByLabel("Registration token").fill(token);
    }
    await page.getByRole("button", { name: "Create account" }).click();
    await page.locator("#app").waitFor({ state: "visible" });
    await page.waitForFunction(() => window.myelinApp.client?.nextBatch);
}

const roomLink = (page, name) => page.locator("#rooms a.room-link", { hasText: name });
const message = (page, text) => page.locator("#timeline li.msg .body", { hasText: text });

async function send(page, text) {
    await page.getByLabel("Message", { exact: true }).fill(text);
    await page.keyboard.press("Enter");
}

/** Sends `text` from one page and returns how long the other took to show it, from the Enter key. */
async function timeToSee(from, to, text) {
    await from.getByLabel("Message", { exact: true }).fill(text);
    const start = Date.now();
    await from.keyboard.press("Enter");
    await message(to, text).waitFor({ timeout: REALTIME_MS * 5 });
    return Date.now() - start;
}

const median = (list) => [...list].sort((x, y) => x - y)[Math.floor(list.length / 2)];

test("two people chat in real time in the browser", async (t) => {
    const alice = await person();
    const bob = await person();
    const a = alice.page;
    const b = bob.page;
    const aliceName = `alice${randomUUID().slice(0, 6)}`;
    const bobName = `bob${randomUUID().slice(0, 6)}`;
    const bobId = `@${bobName}:${SERVER_NAME}`;

    // Register; both land in #general, the auto-join room.
    await registerInUi(a, aliceName);
    await registerInUi(b, bobName);
    await roomLink(a, "general").waitFor();
    await roomLink(b, "general").waitFor();
    // Display names, which the page shows for senders, members, typing and receipts.
    await api(a, "PUT", `/profile/${encodeURIComponent(`@${aliceName}:${SERVER_NAME}`)}/displayname`, { displayname: "Alice" });
    await api(b, "PUT", `/profile/${encodeURIComponent(bobId)}/displayname`, { displayname: "Bob" });
    for (const page of [a, b]) {
        assert.equal(await page.evaluate(() => window.myelinApp.client.transport), "websocket");
    }

    // The server has a media repository, so the page offers uploads.
    await a.waitForFunction(() => window.myelinApp.mediaOk === true);

    // Alice creates a public room with a short code; Bob joins it by its link.
    const code = `books-${randomUUID().slice(0, 6)}`;
    await a.getByRole("button", { name: "+ Room" }).click();
    await a.getByLabel("Name", { exact: true }).fill("Book club");
    await a.getByLabel("Topic").fill("What we are reading");
    await a.getByLabel(/Short code/).fill(code);
    await a.getByRole("button", { name: "Create", exact: true }).click();
    await a.locator("#room-name", { hasText: "Book club" }).waitFor();
    assert.match(await a.locator("#room-topic").textContent(), new RegExp(`#${code}:${SERVER_NAME}`));
    assert.equal(await a.locator("#btn-upload").isVisible(), true);

    await b.goto(`${server.url}/#/room/#${code}:${SERVER_NAME}`);
    await b.getByRole("button", { name: "Join", exact: true }).last().click();
    await b.locator("#room-name", { hasText: "Book club" }).waitFor();

    // Messages both ways, each seen by the other within a second, with name and time.
    // Three each way; the median must be under a second (a loaded CI machine may slow one down).
    const there = [await timeToSee(a, b, "Hello Bob, welcome to the book club")];
    const back = [await timeToSee(b, a, "Thanks Alice! Reading Dune at the moment")];
    there.push(await timeToSee(a, b, "Which edition?"), await timeToSee(a, b, "The one with the maps"));
    back.push(await timeToSee(b, a, "Same here"), await timeToSee(b, a, "Great maps"));
    t.diagnostic(`Alice → Bob ${there.join(", ")} ms; Bob → Alice ${back.join(", ")} ms`);
    assert.ok(median(there) < REALTIME_MS && median(back) < REALTIME_MS, `took ${there} ms and ${back} ms`);
    const seen = b.locator("#timeline li.msg", { hasText: "Hello Bob" });
    assert.equal(await seen.locator(".sender").textContent(), "Alice");
    assert.match(await seen.locator("time").getAttribute("datetime"), /^\d{4}-\d\d-\d\dT/);

    // Typing: Bob types, Alice sees it; Bob sends, it goes.
    await b.getByLabel("Message", { exact: true }).fill("Have you read");
    await a.locator("#typing", { hasText: "Bob is typing" }).waitFor({ timeout: 3000 });
    await b.keyboard.press("Enter");
    await message(a, "Have you read").waitFor();
    await a.locator("#typing", { hasText: /^$/ }).waitFor({ timeout: 3000 });

    // Read receipts and presence: Alice sees that Bob has read her message and is online.
    await a.locator("#timeline .receipts", { hasText: "Seen by Bob" }).first().waitFor({ timeout: 3000 });
    await a.getByRole("button", { name: /online/ }).click();
    await a.locator(`#member-list li[data-user="${bobId}"][data-presence="online"]`).waitFor({ timeout: 5000 });
    await a.locator("#online-count", { hasText: "2" }).waitFor();
    await assertLabelled(a);
    await a.locator("#toast.show").waitFor({ state: "detached", timeout: 6000 });
    await a.screenshot({ path: join(shots, "chat-desktop.png") });

    // A dropped socket comes back by itself, from where it was (`since`): nothing is missed.
    await b.evaluate(() => window.myelinApp.client.ws.close());
    await send(a, "Sent while Bob's socket was down");
    await message(b, "Sent while Bob's socket was down").waitFor({ timeout: 5000 });
    assert.equal(await b.evaluate(() => window.myelinApp.client.transport), "websocket");

    // Unread counts and a notification: Alice looks at #general while Bob writes in the club.
    await roomLink(a, "general").click();
    await a.locator("#room-name", { hasText: "general" }).waitFor();
    await send(b, "Chapter 3 tonight, Alice?");
    await roomLink(a, "Book club").locator(".badge", { hasText: /^[1-9]/ }).waitFor({ timeout: 3000 });
    await a.waitForFunction(() => window.__notes.some((n) => n.title.includes("mentioned you")));
    roomLink(a, "Book club").click();
    await message(a, "Chapter 3 tonight").waitFor();
    await roomLink(a, "Book club").locator(".badge").waitFor({ state: "detached" });

    // A one-to-one chat: Alice starts it by user ID; Bob accepts the invite; they talk.
    await a.getByRole("button", { name: "Chat", exact: true }).click();
    await a.getByLabel("User ID").fill(bobId);
    await a.getByRole("button", { name: "Start chat" }).click();
    await b.locator("#invites li", { hasText: "Alice" }).getByRole("button", { name: /Accept/ }).click();
    await b.locator("#room-name", { hasText: "Alice" }).waitFor();
    await timeToSee(b, a, "Just between us: the ending is great");
    await a.locator("#room-name", { hasText: "Bob" }).waitFor();
    assert.ok(await a.evaluate((bob) => Object.keys(window.myelinApp.direct).includes(bob), bobId));

    // History after a reload, and scrolling back beyond the first page.
    const roomId = await a.evaluate((code) => [...window.myelinApp.rooms.values()].find((r) => r.alias?.startsWith(`#${code}`)).id, code);
    for (let i = 1; i <= 60; i++) await api(a, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/h${i}`, { msgtype: "m.text", body: `history ${i}` });
    await b.reload();
    await b.locator("#app").waitFor({ state: "visible" });
    await roomLink(b, "Book club").click();
    await message(b, "history 60").waitFor();
    assert.equal(await message(b, "Hello Bob").count(), 0, "the first page holds only the latest messages");
    // Scrolling up loads older pages (/messages) until the start of the room.
    const firstShown = async () => (await b.locator("#timeline li.msg .body").first().textContent());
    for (let i = 0; i < 20 && !(await firstShown()).startsWith("Hello Bob"); i++) {
        await b.locator("#timeline-wrap").evaluate((el) => (el.scrollTop = 0));
        await b.waitForTimeout(300);
    }
    assert.equal(await firstShown(), "Hello Bob, welcome to the book club");

    // The directory lists the public rooms.
    await b.getByRole("button", { name: "Browse" }).click();
    await b.locator("#directory-list li", { hasText: "Book club" }).waitFor();
    await b.locator("#directory-list li", { hasText: "general" }).waitFor();
    await b.screenshot({ path: join(shots, "directory.png") });
    await b.keyboard.press("Escape");

    // A file and an image: the image shows inline, fetched with the access token.
    await roomLink(a, "Book club").click();
    await roomLink(b, "Book club").click();
    await exchangeMedia(a, b);

    // Logging out ends the session on the server too.
    const bobToken = await token(b);
    await b.getByRole("button", { name: "Log out" }).click();
    await b.locator("#auth").waitFor({ state: "visible" });
    const whoami = await fetch(`${server.url}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${bobToken}` } });
    assert.equal(whoami.status, 401);

    await alice.context.close();
    await bob.context.close();
    assert.deepEqual(errors, []);
});

test("without a media repository the upload button stays hidden", async () => {
    // A server without one answers its config endpoint like any unknown endpoint.
    const { context, page } = await person();
    await context.route(/\/_matrix\/client\/v1\/media\/config$/, (route) =>
        route.fulfill({ status: 404, json: { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" } }));
    await registerInUi(page, `henry${randomUUID().slice(0, 6)}`);
    await roomLink(page, "general").click();
    await page.locator("#composer").waitFor({ state: "visible" });
    await page.waitForFunction(() => window.myelinApp.mediaOk === false);
    assert.equal(await page.locator("#btn-upload").isVisible(), false);
    await context.close();
});

test("long-poll /sync takes over when WebSockets fail (or when asked), and a phone-sized screen works", async (t) => {
    const carol = await person({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    const dave = await person();
    // Dave's network lets no WebSocket through: each one fails before it opens.
    await dave.context.addInitScript(() => {
        window.WebSocket = class extends EventTarget {
            static OPEN = 1;
            readyState = 0;
            constructor() {
                super();
                setTimeout(() => {
                    this.readyState = 3;
                    this.onclose?.({ code: 1006 });
                }, 20);
            }
            send() {}
            close() {}
        };
    });
    const c = carol.page;
    await registerInUi(c, `carol${randomUUID().slice(0, 6)}`, { path: "/?transport=long-poll" });
    assert.equal(await c.evaluate(() => window.myelinApp.client.transport), "long-poll");
    await registerInUi(dave.page, `dave${randomUUID().slice(0, 6)}`);
    await dave.page.waitForFunction(() => window.myelinApp.client.transport === "long-poll");

    // On a phone the room list slides over; picking a room closes it.
    await roomLink(c, "general").click();
    await c.locator("#room-name", { hasText: "general" }).waitFor();
    assert.equal(await c.locator("#sidebar").evaluate((el) => el.classList.contains("open")), false);
    await roomLink(dave.page, "general").click();
    const took = await timeToSee(dave.page, c, "Hi from a desktop");
    t.diagnostic(`long-poll to long-poll: ${took} ms`);
    assert.ok(took < REALTIME_MS * 2, `long-poll took ${took} ms`);
    await timeToSee(c, dave.page, "Hi from a phone");
    // Dave makes a room; Carol joins it by typing its short code in the Join dialog.
    const code = `garden-${randomUUID().slice(0, 6)}`;
    await dave.page.getByRole("button", { name: "+ Room" }).click();
    await dave.page.getByLabel("Name", { exact: true }).fill("Gardening");
    await dave.page.getByLabel(/Short code/).fill(code);
    await dave.page.getByRole("button", { name: "Create", exact: true }).click();
    await dave.page.locator("#room-name", { hasText: "Gardening" }).waitFor();
    await c.getByRole("button", { name: "Show rooms" }).click();
    await c.getByRole("button", { name: "Join", exact: true }).click();
    await c.getByLabel("Room code or link").fill(code);
    await c.getByLabel("Room code or link").press("Enter");
    await c.locator("#room-name", { hasText: "Gardening" }).waitFor();
    await timeToSee(dave.page, c, "Tomatoes are in");
    // Nothing wider than the screen.
    assert.ok(await c.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
    await c.screenshot({ path: join(shots, "phone.png") });
    await c.getByRole("button", { name: "Show rooms" }).click();
    await c.locator("#sidebar.open").waitFor();
    await carol.context.close();
    await dave.context.close();
    assert.deepEqual(errors, []);
});

test("registration asks for the token when the server requires one, and the keyboard is enough", async () => {
    const tokenServer = await startMyelin({ MYELIN_REGISTRATION__TOKEN_REQUIRED: "true", MYELIN_REGISTRATION__TOKENS: "invite-2026" });
    const context = await browser.newContext();
    await serveFromDisk(context);
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(e.message));
    try {
        await page.goto(tokenServer.url);
        // Keyboard only: tab to the "Create account" tab, then fill the form.
        await page.getByLabel("Username").focus();
        await page.keyboard.press("Shift+Tab");
        await page.keyboard.press("ArrowRight");
        assert.equal(await page.getByRole("tab", { name: "Create account" }).getAttribute("aria-selected"), "true");
        await page.getByLabel("Registration token").waitFor();
        await page.getByLabel("Username").fill(`erin${randomUUID().slice(0, 6)}`);
        await page.getByLabel("Password").fill(PASSWORD);
        await page.getByLabel("Registration token").fill("wrong-token");
        await page.keyboard.press("Enter");
        await page.locator("#auth-error", { hasText: /token/i }).waitFor();
        await page.getByLabel("Registration token").fill("invite-2026");
        await page.keyboard.press("Enter");
        await page.locator("#app").waitFor({ state: "visible" });
        await page.screenshot({ path: join(shots, "registered-with-token.png") });
    } finally {
        await context.close();
        await tokenServer.stop();
    }
    assert.deepEqual(errors, []);
});

test("the page is served with a strict policy and works offline from the binary", async () => {
    const response = await fetch(server.url + "/");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-security-policy"), /script-src 'self'/);
    const { page, context } = await person();
    const blocked = [];
    // Anything not from this server (a CDN, a font service) would be a request elsewhere.
    await page.route("**/*", (route) => {
        if (!route.request().url().startsWith(server.url) && !route.request().url().startsWith(server.url.replace("http", "ws"))) {
            blocked.push(route.request().url());
            return route.abort();
        }
        return route.continue();
    });
    await page.goto(server.url);
    await page.getByRole("tab", { name: "Sign in" }).waitFor();
    assert.deepEqual(blocked, []);
    await page.screenshot({ path: join(shots, "sign-in.png") });
    await context.close();
});

/**
 * WEB_FROM_DISK=1 serves web/ from the working tree instead of the binary, to try changes to the
 * client without rebuilding the server. Never set in CI: there the binary's own files are tested.
 */
async function serveFromDisk(context) {
    if (!process.env.WEB_FROM_DISK) return;
    const web = join(dirname(fileURLToPath(import.meta.url)), "../../../web");
    const types = { js: "text/javascript", css: "text/css", html: "text/html", svg: "image/svg+xml" };
    await context.route(/^http:\/\/127\.0\.0\.1:\d+\/(index\.html|app\.js|matrix\.js|style\.css|favicon\.svg)?(\?.*)?$/, (route) => {
        const name = new URL(route.request().url()).pathname.slice(1) || "index.html";
        route.fulfill({ body: readFileSync(join(web, name)), contentType: types[name.split(".").pop()] });
    });
}

/** Every control on screen (and in the dialogs) has an accessible name. */
async function assertLabelled(page) {
    const unnamed = await page.evaluate(() =>
        [...document.querySelectorAll("button, input:not([type=hidden]), textarea, select, a[href]")]
            .filter((el) => !el.closest("[hidden]") && el.type !== "file")
            .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || el.textContent.trim()))
            .map((el) => el.outerHTML.slice(0, 80)));
    assert.deepEqual(unnamed, []);
}

/** One page sends an image and a text file; the other sees the image inline and downloads the file. */
async function exchangeMedia(from, to) {
    await from.locator("#btn-upload").waitFor({ state: "visible" });
    await from.locator("#upload").setInputFiles({ name: "dot.png", mimeType: "image/png", buffer: tinyPng() });
    await from.locator("#upload").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("chapter 3") });
    await to.locator("#timeline img.inline-image[alt='dot.png']").waitFor({ timeout: 5000 });
    await to.waitForFunction(() => {
        const img = document.querySelector("#timeline img.inline-image[alt='dot.png']");
        return img?.src.startsWith("blob:") && img.complete && img.naturalWidth === 4;
    });
    const download = to.waitForEvent("download");
    await to.getByRole("button", { name: /notes\.txt/ }).click();
    assert.equal((await download).suggestedFilename(), "notes.txt");
}

async function token(page) {
    return page.evaluate(() => window.myelinApp.client.session.access_token);
}

/** A client-server API call with the page's session. */
async function api(page, method, path, body) {
    const response = await fetch(`${server.url}/_matrix/client/v3${path}`, {
        method,
        headers: { Authorization: `Bearer ${await token(page)}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
    });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    return JSON.parse(text);
}

/** A 4×4 PNG. */
function tinyPng() {
    return Buffer.from(
        "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEklEQVR4nGP4z8CAB+GTG8HSALfKY52fTcuYAAAAAElFTkSuQmCC",
        "base64",
    );
}
