#!/usr/bin/env python3
"""Register a user through the shared-secret admin API.

    tests/synapse/register_user.py BASE_URL SECRET USER PASSWORD [--admin]

Works against any server implementing Synapse's API (Synapse, Myelin):
GET /_synapse/admin/v1/register gives a nonce, then POST it back with
mac = hex(HMAC-SHA1(secret, nonce NUL user NUL password NUL "admin"|"notadmin")).
Prints the server's JSON reply on stdout; exits 1 if the status is not 2xx.
Standard library only.
"""

import argparse
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request


def call(method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    m = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        m.update(part.encode())
        m.update(b"\x00")
    m.update(b"admin" if admin else b"notadmin")
    return m.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base_url")
    p.add_argument("secret")
    p.add_argument("user", help="localpart")
    p.add_argument("password")
    p.add_argument("--admin", action="store_true")
    a = p.parse_args()
    url = a.base_url.rstrip("/") + "/_synapse/admin/v1/register"

    status, text = call("GET", url)
    if status // 100 != 2:
        print(text)
        print(f"register_user.py: GET nonce: HTTP {status}", file=sys.stderr)
        return 1
    nonce = json.loads(text)["nonce"]
    body = {
        "nonce": nonce,
        "username": a.user,
        "password": a.password,
        "admin": a.admin,
        "mac": mac(a.secret, nonce, a.user, a.password, a.admin),
    }
    status, text = call("POST", url, body)
    print(text)
    if status // 100 != 2:
        print(f"register_user.py: POST register: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
