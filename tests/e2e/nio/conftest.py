"""Starts one real Myelin for the session and hands out nio clients."""

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from nio import AsyncClient, AsyncClientConfig

# E2E_HOMESERVER_URL (+ E2E_SERVER_NAME) points the suite at a running server instead,
# e.g. tests/synapse/start, to check the tests themselves against the reference server.
SERVER_NAME = os.environ.get("E2E_SERVER_NAME", "localhost")
PASSWORD = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[3]


def myelin_bin() -> Path:
    default = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "myelin"
    path = Path(os.environ.get("MYELIN_BIN") or default)
    if not os.access(path, os.X_OK):
        pytest.exit(f"no Myelin binary at {path}: build it or set MYELIN_BIN", returncode=2)
    return path


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    if os.environ.get("E2E_HOMESERVER_URL"):
        yield os.environ["E2E_HOMESERVER_URL"]
        return
    work = tmp_path_factory.mktemp("myelin")
    # Only our MYELIN_* variables: the server rejects unknown ones (MYELIN_BIN, MYELIN_CACHE).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    env.update(
        MYELIN_SERVER_NAME=SERVER_NAME,
        MYELIN_DATABASE__PATH=str(work / "db"),
        MYELIN_LISTEN__CLIENT="127.0.0.1:0",
        MYELIN_REGISTRATION__ENABLED="true",
        MYELIN_REGISTRATION__SHARED_SECRET="e2e-secret",
        MYELIN_RATE_LIMITS__ENABLED="false",
    )
    out, err = work / "stdout.log", work / "stderr.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([myelin_bin(), "serve"], env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    try:
        url, deadline = None, time.monotonic() + 30
        while url is None:
            for line in out.read_text().splitlines():
                if line.startswith("myelin: listening on "):
                    url = line.removeprefix("myelin: listening on ").strip()
            if url is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Myelin did not start (exit {proc.poll()}):\n{err.read_text()[-4000:]}")
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
async def new_client(server_url):
    """new_client(user="") -> AsyncClient for this server; all are closed after the test."""
    clients = []

    def make(user: str = "") -> AsyncClient:
        # Bounded: nio retries connection errors forever by default.
        config = AsyncClientConfig(max_timeouts=2, request_timeout=10)
        client = AsyncClient(server_url, user, config=config)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def fresh() -> str:
    """A fresh localpart (or alias localpart), so tests never share accounts or aliases."""
    return f"nio-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def username():
    """A fresh localpart per test, so tests never share accounts."""
    return fresh()
