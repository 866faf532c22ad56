// Starts a real Myelin on 127.0.0.1 (ephemeral port, throwaway database) and stops it by PID.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { accessSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

// E2E_HOMESERVER_URL (+ E2E_SERVER_NAME) points the suite at a running server instead,
// e.g. tests/synapse/start, to check the tests themselves against the reference server.
export const SERVER_NAME = process.env.E2E_SERVER_NAME ?? "localhost";
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** `env`: more MYELIN_* settings for this server (e.g. auto-join rooms). */
export async function startMyelin(env = {}) {
    if (process.env.E2E_HOMESERVER_URL) return { url: process.env.E2E_HOMESERVER_URL, stop: async () => {} };
    const bin = process.env.MYELIN_BIN || join(process.env.CARGO_TARGET_DIR || join(repo, "target"), "debug", "myelin");
    accessSync(bin, constants.X_OK); // throws "ENOENT ... myelin" when it is not built
    const dir = mkdtempSync(join(tmpdir(), "myelin-e2e-js-"));
    // Only our MYELIN_* variables: the server rejects unknown ones (MYELIN_BIN, MYELIN_CACHE).
    const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MYELIN_")));
    Object.assign(childEnv, {
        MYELIN_SERVER_NAME: SERVER_NAME,
        MYELIN_DATABASE__PATH: join(dir, "db"),
        MYELIN_LISTEN__CLIENT: "127.0.0.1:0",
        MYELIN_REGISTRATION__ENABLED: "true",
        MYELIN_REGISTRATION__SHARED_SECRET: "e2e-secret",
        MYELIN_RATE_LIMITS__ENABLED: "false",
        ...env,
    });
    const errLog = join(dir, "stderr.log");
    const errFd = openSync(errLog, "w");
    const child = spawn(bin, ["serve"], { env: childEnv, stdio: ["ignore", "pipe", errFd] });
    closeSync(errFd);

    async function stop() {
        if (child.exitCode === null && child.signalCode === null) {
            const exited = once(child, "exit");
            child.kill("SIGTERM");
            if ((await Promise.race([exited, sleep(10_000, "timeout", { ref: false })])) === "timeout") {
                child.kill("SIGKILL");
                await exited;
            }
        }
        rmSync(dir, { recursive: true, force: true });
    }

    try {
        const url = await new Promise((resolve, reject) => {
            const onExit = (code, signal) => fail(`exited: ${code ?? signal}`);
            const timer = setTimeout(() => fail("no 'listening' line within 30 s"), 30_000);
            const fail = (why) => {
                clearTimeout(timer);
                reject(new Error(`Myelin did not start (${why}):\n${readFileSync(errLog, "utf8").slice(-4000)}`));
            };
            child.on("error", (e) => fail(e.message));
            child.on("exit", onExit);
            // Reading every line also keeps the stdout pipe drained for the server's whole life.
            createInterface({ input: child.stdout }).on("line", (line) => {
                const match = /^myelin: listening on (\S+)/.exec(line);
                if (match) {
                    clearTimeout(timer);
                    child.off("exit", onExit);
                    resolve(match[1]);
                }
            });
        });
        return { url, stop };
    } catch (e) {
        await stop();
        throw e;
    }
}
