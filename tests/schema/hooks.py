"""Schemathesis hooks: every request carries the test user's token, and path parameters that
name things (room, user, event, device, alias, server, media) get real IDs made by run.py, so
generated requests reach the handlers' logic instead of stopping at a 404."""

import json
import os

import schemathesis

IDS = json.loads(open(os.environ["SCHEMA_IDS"]).read())
REAL = {name: IDS[name] for name in ("roomId", "userId", "eventId", "deviceId", "roomIdOrAlias", "roomAlias", "serverName", "mediaId") if name in IDS}


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if path_parameters:
        for name, value in REAL.items():
            if name in path_parameters:
                path_parameters[name] = value
    return path_parameters


@schemathesis.hook
def map_headers(ctx, headers):
    headers = dict(headers or {})
    headers["Authorization"] = f"Bearer {IDS['token']}"
    return headers
