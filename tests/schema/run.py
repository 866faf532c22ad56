"""Starts a real Myelin, gives it a user, a room and an event, and runs schemathesis over the
client-server OpenAPI bundle against it (hooks.py supplies the token and the real IDs).

Checks: no 5xx for any generated input, and responses that conform to the spec's schemas.
Known, justified differences are in baseline.json ("METHOD path": reason); a failure of an
operation there is reported but does not fail the run."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPEC = Path(os.environ.get("SCHEMA_SPEC", REPO.parent / "shared/spec/openapi/client-server.json"))


def call(base, method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start(binary, work):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    env.update(
        MYELIN_SERVER_NAME="localhost",
        MYELIN_DATABASE__PATH=str(work / "db"),
        MYELIN_LISTEN__CLIENT="127.0.0.1:0",
        MYELIN_REGISTRATION__ENABLED="true",
        MYELIN_RATE_LIMITS__ENABLED="false",
        MYELIN_LOG__LEVEL="warn",
        # Hermetic: the spec's examples name real servers (matrix.org); never reach them.
        MYELIN_FEDERATION__IP_RANGE_DENYLIST="0.0.0.0/0,::/0",
    )
    out, err = work / "stdout.log", work / "stderr.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([binary, "serve"], env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    deadline = time.monotonic() + 30
    while True:
        for line in out.read_text().splitlines():
            if line.startswith("myelin: listening on "):
                return proc, line.removeprefix("myelin: listening on ").strip()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"Myelin did not start:\n{err.read_text()[-4000:]}")
        time.sleep(0.05)


def register(base, name):
    body = {"username": name, "password": "schema-test-password"}
    status, challenge = call(base, "POST", "/_matrix/client/v3/register", body)
    assert status == 401, challenge
    body["auth"] = {"type": "m.login.dummy", "session": challenge["session"]}
    status, reply = call(base, "POST", "/_matrix/client/v3/register", body)
    assert status == 200, reply
    return reply


def main():
    binary = os.environ.get("MYELIN_BIN") or str(Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug/myelin")
    max_examples = os.environ.get("SCHEMA_MAX_EXAMPLES", "5")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, base = start(binary, work)
        try:
            alice, bob = register(base, "alice"), register(base, "bob")
            token = alice["access_token"]
            status, room = call(base, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "schema"}, token)
            assert status == 200, room
            room_id = room["room_id"]
            call(base, "POST", f"/_matrix/client/v3/join/{room_id}", {}, bob["access_token"])
            status, sent = call(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hello"}, token)
            assert status == 200, sent
            request = urllib.request.Request(base + "/_matrix/media/v3/upload?filename=a.txt", method="POST", data=b"media")
            request.add_header("Content-Type", "text/plain")
            request.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, timeout=30) as response:
                media = json.loads(response.read())["content_uri"].rsplit("/", 1)[1]
            ids = {
                "mediaId": media,
                "token": token,
                "userId": alice["user_id"],
                "deviceId": alice["device_id"],
                "roomId": room_id,
                "roomIdOrAlias": room_id,
                "roomAlias": "#schema:localhost",
                "eventId": sent["event_id"],
                "serverName": "localhost",
            }
            (work / "ids.json").write_text(json.dumps(ids))
            env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", SCHEMA_IDS=str(work / "ids.json"), PYTHONPATH=str(HERE))
            report = work / "junit.xml"
            command = [
                sys.executable, "-m", "schemathesis.cli", "run", str(SPEC),
                "--url", base,
                "--checks", "not_a_server_error,response_schema_conformance",
                "--max-examples", max_examples,
                "--phases", "examples,fuzzing",
                "--request-timeout", "20",
                "--workers", "2",
                "--seed", "1",
                "--report", "junit", "--report-junit-path", str(report),
                "--suppress-health-check", "all",
                "--max-time", os.environ.get("SCHEMA_MAX_TIME", "240"),
                "--generation-with-security-parameters", "false",
                "--no-shrink",
                "--no-color",
                # What would end the test user's session or account, so nothing after could run.
                "--exclude-path-regex", "logout|deactivate|/account/password|delete_devices|/refresh",
            ]
            result = subprocess.run(command, env=env, cwd=work, timeout=int(os.environ.get("SCHEMA_TIMEOUT", "600")))
            failed = failing_operations(report)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    baseline = json.loads((HERE / "baseline.json").read_text())
    new = sorted(op for op in failed if op not in baseline)
    fixed = sorted(op for op in baseline if op not in failed)
    print(f"\nschema: {len(failed)} operations failed, {len(failed) - len(new)} of them in the baseline")
    for op in fixed:
        print(f"schema: {op} passes now: take it out of tests/schema/baseline.json")
    for op in new:
        print(f"schema: NEW FAILURE {op}")
    if result.returncode not in (0, 1) and not failed:
        print(f"schema: schemathesis exited with {result.returncode}")
        return 1
    return 1 if new else 0


def failing_operations(report):
    """Operation names ("METHOD /path") of the failed test cases of a JUnit report."""
    import xml.etree.ElementTree as ET

    if not report.exists():
        return set()
    failed = set()
    for case in ET.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(case.get("name"))
    return failed


if __name__ == "__main__":
    sys.exit(main())
