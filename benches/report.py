#!/usr/bin/env python3
"""Turn the JSON lines of one benches/run into the HTTP section of docs/benchmarks.md.

    benches/report.py RESULTS.jsonl DOC.md
    benches/report.py --storage STORAGE.jsonl DOC.md
    benches/report.py --rooms ROOMS.jsonl DOC.md
    benches/report.py --sync SYNC.jsonl DOC.md
    benches/report.py --federation FEDERATION.jsonl DOC.md

Rewrites only what lies between the markers below (appending them, and
creating DOC.md, if missing). Standard library only.

Lines of RESULTS.jsonl, told apart by "scenario":
  meta          one, the machine and the run's parameters
  status        one per server: "ok", or why it was not measured
  setup-users   myelin-loadgen's registration summary
  login, whoami, account-data   myelin-loadgen's result lines
  memory        one per measured server, from /proc after the runs

ROOMS.jsonl has meta, status, setup-users and memory lines too, and:
  send-one-room, send-many-rooms   myelin-loadgen's result lines
  state-lookup    one per (history size, request, clients) measurement
  state-inprocess benches/state.rs: phase populate, history or lookup
  load            the load average at points of the run
  server-log      how many warnings and errors Myelin logged, the first five
  synapse-config  bcrypt rounds of the Synapse measured

SYNC.jsonl has meta, status, load, memory, server-log and synapse-config
(with the database) lines too, and:
  sync-fanout     one per (transport, load): sends, delivery, completeness
  initial-sync    full initial /sync of a user in R rooms with history
  messages        GET /messages?dir=b&limit=1000 in a room of 1000 messages

FEDERATION.jsonl has meta, status (one per pair) and load lines, and:
  federation-latency  one per sender-receiver pair (label "myelin-synapse", ...):
                  send latency, arrival latency at the other server's client
"""

import json
import os
import sys

MARKERS = {
    "http": ("<!-- http-bench:begin -->", "<!-- http-bench:end -->", "## HTTP: Myelin and Synapse"),
    "storage": ("<!-- storage-bench:begin -->", "<!-- storage-bench:end -->", "## Storage: durable writes and group commit"),
    "rooms": ("<!-- rooms-bench:begin -->", "<!-- rooms-bench:end -->", "## Rooms: sending events and state lookups"),
    "sync": ("<!-- sync-bench:begin -->", "<!-- sync-bench:end -->", "## Sync: delivery, initial sync, history"),
    "federation": ("<!-- federation-bench:begin -->", "<!-- federation-bench:end -->", "## Federation: message arrival between servers"),
}
# Issue 6's target: Myelin to Myelin on loopback, median arrival at most this.
FED_TARGET_P50_MS = 20.0
FED_PAIRS = [
    ("myelin-synapse", "Myelin → Synapse"),
    ("synapse-myelin", "Synapse → Myelin"),
    ("myelin-myelin", "Myelin → Myelin"),
    ("synapse-synapse", "Synapse → Synapse"),
]
# The targets of issue 4 ("Performance").
SYNC_TARGETS = {
    "send_ratio": 50.0,        # Myelin's saturating send rate over Synapse's, at least
    "delivery_p50_ms": 10.0,   # delivery p50 at light load, at most
    "initial_sync_ms": 10.0,   # initial sync p50 for 10 rooms, at most
    "messages_ms": 20.0,       # /messages p50 over 1 000 messages, at most
    "rss_mib": 40.0,           # resident memory after the section, at most
}
SERVERS = [("myelin", "Myelin"), ("synapse", "Synapse")]
SCENARIOS = [
    ("login", "`POST /login` (password), then an untimed logout"),
    ("whoami", "`GET /account/whoami`"),
    ("account-data", "`PUT /user/{userId}/account_data/{type}`"),
]
DOC_HEAD = """# Benchmarks

Myelin measured against Synapse on the same machine. `benches/run` regenerates
the section between the `http-bench` markers; the rest of this file is kept.

"""


def num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def mib(kib) -> str:
    return "—" if kib in (None, "") else f"{int(kib) / 1024:.0f}"


def ratio(a, b) -> str:
    if not a or not b:
        return ""
    return f"{a / b:.2f}×"


def render(lines: list[dict]) -> str:
    meta = next((l for l in lines if l.get("scenario") == "meta"), {})
    status = {l["label"]: l for l in lines if l.get("scenario") == "status"}
    results = {(l.get("label"), l["scenario"]): l for l in lines}

    def cell(server: str, scenario: str, f) -> str:
        r = results.get((server, scenario))
        if r is None:
            return "not run"
        return f(r)

    def raw(server: str, scenario: str, key: str):
        r = results.get((server, scenario))
        return None if r is None else r.get(key)

    out = []
    out.append(
        f"Run of {meta.get('date', '?')} by `benches/run{' --quick' if meta.get('quick') else ''}`"
        f" on {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('mem_total', '?')} of memory,"
        f" Linux {meta.get('kernel', '?')}."
    )
    out.append("")
    out.append(
        f"- Myelin: `{meta.get('myelin_bin', '?')}`, commit {meta.get('myelin_commit') or 'none'};"
        f" status: {status.get('myelin', {}).get('status', 'not run')}."
    )
    out.append(
        f"- Synapse {meta.get('synapse_version', '?')} on {meta.get('synapse_db', '?')},"
        f" rate limits off, bcrypt_rounds {meta.get('synapse_bcrypt_rounds', '?')} (its default);"
        f" status: {status.get('synapse', {}).get('status', 'not run')}."
    )
    out.append(
        f"- Load: `myelin-loadgen`, {meta.get('concurrency', '?')} concurrent clients"
        f" (one request in flight each, HTTP/1.1 keep-alive) over {meta.get('users', '?')} users,"
        f" {meta.get('duration_s', '?')} s per scenario after a {meta.get('warmup_s', 0)} s warm-up,"
        " one server at a time; the load generator shares the machine's CPUs with the server."
    )
    out.append("")
    out.append("| Scenario | Measure | Myelin | Synapse | Myelin ÷ Synapse |")
    out.append("| --- | --- | ---: | ---: | ---: |")
    for key, title in SCENARIOS:
        row = [f"{key}: {title}"]
        out.append(
            f"| {row[0]} | throughput (req/s) | "
            + " | ".join(cell(s, key, lambda r: num(r["throughput_rps"])) for s, _ in SERVERS)
            + f" | {ratio(raw('myelin', key, 'throughput_rps'), raw('synapse', key, 'throughput_rps'))} |"
        )
        out.append(
            "| | latency p50 / p90 / p99 / max (ms) | "
            + " | ".join(
                cell(s, key, lambda r: " / ".join(num(r["latency_ms"][p]) for p in ("p50", "p90", "p99", "max")))
                for s, _ in SERVERS
            )
            + " | |"
        )
        out.append(
            "| | ok / errors | "
            + " | ".join(cell(s, key, lambda r: f"{r['ok']:,} / {r['errors']:,}") for s, _ in SERVERS)
            + " | |"
        )
    rss = {s: results.get((s, "memory")) for s, _ in SERVERS}
    out.append(
        "| memory, after the runs | server VmRSS / VmHWM (MiB) | "
        + " | ".join(
            "not run" if rss[s] is None else f"{mib(rss[s].get('vmrss_kib'))} / {mib(rss[s].get('vmhwm_kib'))}"
            for s, _ in SERVERS
        )
        + f" | {ratio((rss['myelin'] or {}).get('vmrss_kib'), (rss['synapse'] or {}).get('vmrss_kib'))} |"
    )
    out.append(
        "| | PostgreSQL, all its processes (PSS, MiB) | — (embedded) | "
        + ("not run" if rss["synapse"] is None else mib(rss["synapse"].get("db_pss_kib")))
        + " | |"
    )
    out.append("")

    notes = []
    for s, name in SERVERS:
        st = status.get(s)
        if st and st.get("status") != "ok" and st.get("detail"):
            notes.append(f"- {name} was not measured: {st['detail']}")
        for key, _ in SCENARIOS:
            r = results.get((s, key))
            for e in (r or {}).get("error_samples", []):
                notes.append(f"- {name} {key}: {e['count']:,} × `{e['error'][:160]}`")
            if r and r.get("untimed_errors"):
                notes.append(f"- {name} {key}: {r['untimed_errors']:,} untimed requests (logouts) failed")
    if notes:
        out.append("Errors and notes:")
        out.append("")
        out.extend(notes)
        out.append("")
    out.append(
        "Throughput counts successes (2xx with a JSON body) per second of wall-clock time;"
        " latencies are of successes only. Raw lines: `docs/benchmarks/http.jsonl`."
    )
    return "\n".join(out)


def render_storage(lines: list[dict]) -> str:
    meta = next((l for l in lines if l.get("scenario") == "meta"), {})
    phases = {l["phase"]: l for l in lines if l.get("scenario") == "storage"}
    out = [
        f"Run of {meta.get('date', '?')} by `benches/run` (`cargo bench --bench storage`) on"
        f" {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), commit {meta.get('myelin_commit') or 'none'}."
        " Each write is one batch holding one account-data entry, committed through `Storage` in process;"
        " durable means the call returns after the write-ahead log is fsynced.",
        "",
        "| Phase | Writers | Writes/s | Latency p50 / p99 / max (ms) | fsyncs | Writes per fsync |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    titles = {
        "sequential": "durable, one writer (each write waits for its own fsync)",
        "concurrent": "durable, concurrent writers (group commit)",
        "relaxed": "not durable: WAL without fsync (for scale)",
    }
    for key in ("sequential", "concurrent", "relaxed"):
        p = phases.get(key)
        if p is None:
            continue
        l = p["latency_ms"]
        out.append(
            f"| {titles[key]} | {p['writers']} | {num(p['writes_per_s'])} |"
            f" {num(l['p50'])} / {num(l['p99'])} / {num(l['max'])} | {p['fsyncs']:,} |"
            f" {num(p['writes_per_fsync']) if p['durable'] else '—'} |"
        )
    seq, conc = phases.get("sequential"), phases.get("concurrent")
    if seq and conc:
        out.append("")
        out.append(
            f"One writer reaches {num(seq['writes_per_s'])} durable writes/s, which is 1 / fsync latency on this disk;"
            f" {conc['writers']} writers reach {num(conc['writes_per_s'])}/s"
            f" ({conc['writes_per_s'] / seq['writes_per_s']:.1f}× as many), because batches that arrive during an fsync"
            f" share the next one ({num(conc['writes_per_fsync'])} per fsync on average)."
        )
    out.append("")
    out.append("Raw lines: `docs/benchmarks/storage.jsonl`.")
    return "\n".join(out)


def thousands(n) -> str:
    return f"{int(n):,}".replace(",", " ")


def render_rooms(lines: list[dict]) -> str:
    meta = next((l for l in lines if l.get("scenario") == "meta"), {})
    status = {l["label"]: l for l in lines if l.get("scenario") == "status"}
    results = {(l.get("label"), l["scenario"]): l for l in lines if l.get("scenario") in ("send-one-room", "send-many-rooms", "memory", "server-log", "synapse-config")}
    lookups = [l for l in lines if l.get("scenario") == "state-lookup"]
    inproc = [l for l in lines if l.get("scenario") == "state-inprocess"]
    loads = [l for l in lines if l.get("scenario") == "load"]
    names = dict(SERVERS)

    def raw(server, scenario, key):
        r = results.get((server, scenario))
        return None if r is None else r.get(key)

    rounds = (results.get(("synapse", "synapse-config")) or {}).get("bcrypt_rounds", meta.get("synapse_rooms_bcrypt_rounds", "?"))
    out = [
        f"Run of {meta.get('date', '?')} by `benches/run{' --quick' if meta.get('quick') else ''}`"
        f" on {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('mem_total', '?')} of memory,"
        f" Linux {meta.get('kernel', '?')}.",
        "",
        f"- Myelin: `{meta.get('myelin_bin', '?')}`, commit {meta.get('myelin_commit') or 'none'};"
        f" status: {status.get('myelin', {}).get('status', 'not run')}.",
        f"- Synapse {meta.get('synapse_version', '?')} on {meta.get('synapse_db', '?')} (fsync on), rate limits off,"
        f" bcrypt_rounds {rounds} in this section (only the registration of room members hashes passwords);"
        f" status: {status.get('synapse', {}).get('status', 'not run')}.",
        f"- Every room: version {meta.get('room_version', '?')} (on both servers), `preset: public_chat`, with a name."
        f" A fresh server and database for this section; one server at a time; the load generator shares the CPUs.",
    ]
    if loads:
        out.append(
            "- Load average (1 / 5 / 15 min) during the section: "
            + "; ".join(f"{l['when']}{'' if l.get('label') == 'all' else ' (' + names.get(l.get('label'), l.get('label')) + ')'}: {l['loadavg'].replace(' ', ' / ')}" for l in loads)
            + "."
        )
    out += ["", "### Sending: `PUT /rooms/{roomId}/send/m.room.message/{txnId}`", ""]
    out.append(
        f"{meta.get('concurrency', '?')} clients, one request in flight each, {meta.get('duration_s', '?')} s after a"
        f" {meta.get('warmup_s', 0)} s warm-up (in rooms of their own, not measured), each with a fresh transaction ID and a"
        " small `m.text` body. A `200` means the event is durably stored: Myelin answers after its write-ahead log is"
        " fsynced, Synapse after PostgreSQL committed."
    )
    out += ["", "| Scenario | Measure | Myelin | Synapse | Myelin ÷ Synapse |", "| --- | --- | ---: | ---: | ---: |"]
    titles = {
        "send-one-room": f"one room: all {meta.get('concurrency', '?')} clients' users joined to it, all send into it",
        "send-many-rooms": f"many rooms: each of the {meta.get('concurrency', '?')} clients sends into a room of its own",
    }
    for key in ("send-one-room", "send-many-rooms"):
        def cell(server, f, key=key):
            r = results.get((server, key))
            return "not run" if r is None else f(r)
        out.append(
            f"| {key}: {titles[key]} | events/s | "
            + " | ".join(cell(s, lambda r: num(r["throughput_rps"])) for s, _ in SERVERS)
            + f" | {ratio(raw('myelin', key, 'throughput_rps'), raw('synapse', key, 'throughput_rps'))} |"
        )
        out.append(
            "| | latency p50 / p90 / p99 / max (ms) | "
            + " | ".join(cell(s, lambda r: " / ".join(num(r["latency_ms"][p]) for p in ("p50", "p90", "p99", "max"))) for s, _ in SERVERS)
            + " | |"
        )
        out.append("| | ok / errors | " + " | ".join(cell(s, lambda r: f"{r['ok']:,} / {r['errors']:,}") for s, _ in SERVERS) + " | |")
    rss = {s: results.get((s, "memory")) for s, _ in SERVERS}
    out.append(
        "| memory, after the whole section | server VmRSS / VmHWM (MiB) | "
        + " | ".join("not run" if rss[s] is None else f"{mib(rss[s].get('vmrss_kib'))} / {mib(rss[s].get('vmhwm_kib'))}" for s, _ in SERVERS)
        + f" | {ratio((rss['myelin'] or {}).get('vmrss_kib'), (rss['synapse'] or {}).get('vmrss_kib'))} |"
    )
    out.append(
        "| | database: Myelin on disk (MiB) / PostgreSQL processes (PSS, MiB) | "
        + ("not run" if rss["myelin"] is None else (f"{rss['myelin']['db_bytes'] / 1048576:.0f} on disk" if rss["myelin"].get("db_bytes") else "—"))
        + " | "
        + ("not run" if rss["synapse"] is None else f"{mib(rss['synapse'].get('db_pss_kib'))} resident")
        + " | |"
    )

    # --- state lookups over HTTP
    out += ["", "### State lookups over HTTP", ""]
    if not lookups:
        out.append("Not run (`BENCH_MEMBERS` empty or 0, or the runs failed: see the notes below).")
    else:
        out.append(
            "A public room of M members (M users registered with the shared secret, then each `POST /join`), then H"
            " messages sent into it (16 senders at once); after each H, each lookup for"
            f" {meta.get('duration_s', '?')} s per client count, after a {meta.get('warmup_s', 0)} s unrecorded warm-up."
            " `member` is `GET /rooms/{roomId}/state/m.room.member/{userId}` for a member picked at random each time,"
            " `name` is `GET /rooms/{roomId}/state/m.room.name`; every client reads as a joined member. H counts messages"
            " only: the M joins are state events of the history too."
        )
        out.append("")
        pops = {}
        for l in lookups:
            pops[(l["label"], l["members"])] = l
        out.append("| Server | Members | Registering them (s) | Joins: time (s), joins/s | Sending the history: messages/s |")
        out.append("| --- | ---: | ---: | --- | --- |")
        for (label, m), l in sorted(pops.items(), key=lambda kv: (kv[0][0] != "myelin", kv[0][1])):
            st = l.get("setup", {})
            sends = "; ".join(
                f"{thousands(int(k.split('_')[1]))} by {num(v['throughput_rps'])}/s" + (f" ({v['errors']:,} errors)" if v.get("errors") else "")
                for k, v in sorted(((k, v) for k, v in st.items() if k.startswith("history_")), key=lambda kv: int(kv[0].split("_")[1]))
            )
            out.append(
                f"| {names.get(label, label)} | {thousands(m)} | {num(st.get('register_s', 0))} |"
                f" {num(st.get('join_s', 0))}, {num(st.get('joins_per_s', 0))}/s | up to {sends or '—'} |"
            )
        out.append("")
        out.append("| Request | Members | History (messages) | Clients | Myelin req/s | Myelin p50 / p99 (ms) | Synapse req/s | Synapse p50 / p99 (ms) | Myelin ÷ Synapse (req/s) |")
        out.append("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |")
        by = {(l["label"], l["request"], l["members"], l["history"], l["concurrency"]): l for l in lookups}
        keys = sorted({(k[1], k[2], k[3], k[4]) for k in by}, key=lambda k: (k[0] != "member", k[1], k[3], k[2]))
        for req, m, h, c in keys:
            my, sy = by.get(("myelin", req, m, h, c)), by.get(("synapse", req, m, h, c))
            def cells(r):
                if r is None:
                    return ["not measured", "—"]
                lat = f"{num(r['latency_ms']['p50'])} / {num(r['latency_ms']['p99'])}"
                if r.get("errors"):
                    lat += f" ({r['errors']:,} errors)"
                return [num(r["throughput_rps"]), lat]
            out.append(
                f"| {req} | {thousands(m)} | {thousands(h)} | {c} | " + " | ".join(cells(my) + cells(sy))
                + f" | {ratio((my or {}).get('throughput_rps'), (sy or {}).get('throughput_rps'))} |"
            )
        # Growth with history: p50 at the largest history over p50 at the smallest, per series.
        growth = []
        series = {}
        for l in lookups:
            series.setdefault((l["label"], l["members"], l["request"], l["concurrency"]), []).append(l)
        for (label, m, req, c), ls in sorted(series.items(), key=lambda kv: (kv[0][0] != "myelin", kv[0][1], kv[0][2] != "member", kv[0][3])):
            ls.sort(key=lambda l: l["history"])
            if len(ls) < 2 or not ls[0]["latency_ms"]["p50"]:
                continue
            a, b = ls[0], ls[-1]
            growth.append(
                f"{names.get(label, label)}, {thousands(m)} members, {req}, {c} client{'s' if c != 1 else ''}:"
                f" {b['latency_ms']['p50'] / a['latency_ms']['p50']:.2f}"
            )
        if growth:
            out.append("")
            out.append(
                "Growth with history, p50 latency after the most messages ÷ p50 after the fewest (1.00 = no growth): "
                + "; ".join(growth) + "."
            )

    # --- in process
    out += ["", "### In process: state lookups in a big room against history (Myelin)", ""]
    pop = next((l for l in inproc if l.get("phase") == "populate"), None)
    looks = [l for l in inproc if l.get("phase") == "lookup"]
    if pop is None or not looks:
        out.append("Not run (or it failed: see the notes below).")
    else:
        hist = {l["history"]: l for l in inproc if l.get("phase") == "history"}
        hs = sorted({l["history"] for l in looks})
        out.append(
            f"`cargo bench --bench state` (`benches/state.rs`): the `myelin` library without HTTP, on a RocksDB"
            f" database on disk. {thousands(pop['members'])} accounts (created without a password, so no hash), one"
            f" public room, {thousands(pop['members'] - 1)} joins through `Rooms::change_membership`"
            f" ({num(pop['join_s'])} s, {num(pop['joins_per_s'])} joins/s, each one durable), then messages through"
            f" `Rooms::send` by 16 tasks up to each history size"
            + (" (" + ", ".join(f"{num(h['sends_per_s'])} messages/s up to {thousands(k)}" for k, h in sorted(hist.items())) + ")" if hist else "")
            + ". Latency in microseconds, p50 (p99) of"
            f" {thousands(next((l['samples'] for l in looks if l['cache'] == 'warm' and l['operation'] == 'member'), 0))} warm member and name lookups,"
            f" fewer for whole states; cold is the first call after a restart of `Services` on the same database"
            f" ({next((l['samples'] for l in looks if l['cache'] == 'cold'), 0)} restarts per cell), with Myelin's caches"
            " and RocksDB's block cache empty but the operating system's page cache warm."
        )
        out.append("")
        out.append("| Operation | Cache | " + " | ".join(f"history {thousands(h)}" for h in hs) + " |")
        out.append("| --- | --- | " + " | ".join("---:" for _ in hs) + " |")
        ops = [
            ("member", "`current_state_event(room, \"m.room.member\", user)`"),
            ("name", "`current_state_event(room, \"m.room.name\", \"\")`"),
            ("room_record", "of which: reading the room's record, which names its current snapshot (`Storage::room`)"),
            ("state_key", "of which: the short ID of `(m.room.member, user)` (`Storage::short_state_key`)"),
            ("state_map", f"whole state as a map (`current_state`), {thousands(pop['state_entries'])} entries"),
            ("state_events", "whole state, every event loaded and parsed (`state_events`)"),
        ]
        by = {(l["operation"], l["cache"], l["history"]): l for l in looks}

        def us(x):
            return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"
        for op, title in ops:
            for cache in ("warm", "cold"):
                cells = []
                for h in hs:
                    l = by.get((op, cache, h))
                    cells.append("—" if l is None else f"{us(l['latency_us']['p50'])} ({us(l['latency_us']['p99'])})")
                out.append(f"| {title if cache == 'warm' else ''} | {cache} | " + " | ".join(cells) + " |")
        shapes = {l["history"]: l for l in looks}
        out.append(
            "| snapshots read to rebuild the state / entries decoded | | "
            + " | ".join(f"{shapes[h]['snapshots_read']} / {thousands(shapes[h]['entries_decoded'])}" for h in hs) + " |"
        )
        out.append("| database on disk (MiB) | | " + " | ".join(f"{shapes[h]['db_bytes'] / 1048576:.0f}" for h in hs) + " |")

    notes = []
    for label, st in status.items():
        if st.get("status") != "ok" and st.get("detail"):
            notes.append(f"- {label}: {st['status']}: {st['detail']}")
    for s, name in SERVERS:
        for key in ("send-one-room", "send-many-rooms"):
            r = results.get((s, key))
            for e in (r or {}).get("error_samples", []):
                notes.append(f"- {name} {key}: {e['count']:,} × `{e['error'][:160]}`")
        for l in lookups:
            if l["label"] == s:
                for e in l.get("error_samples", []):
                    notes.append(f"- {name} state-lookup {l['request']} ({l['members']} members, {l['history']} messages): {e['count']:,} × `{e['error'][:160]}`")
    sl = results.get(("myelin", "server-log"))
    if sl and sl.get("count"):
        notes.append(f"- Myelin logged {sl['count']:,} warnings or errors; the first: `{sl.get('first', '')[:300]}`")
    elif sl is not None:
        notes.append("- Myelin logged no warning and no error during the section.")
    if notes:
        out += ["", "Errors and notes:", ""] + notes
    out += [
        "",
        "Throughput counts successes (2xx with a JSON body) per second of wall-clock time; latencies are of"
        " successes only. Raw lines: `docs/benchmarks/rooms.jsonl`.",
    ]
    return "\n".join(out)


def render_sync(lines: list[dict]) -> str:
    meta = next((l for l in lines if l.get("scenario") == "meta"), {})
    status = {l["label"]: l for l in lines if l.get("scenario") == "status"}
    fanout = {(l["label"], l["transport"], l["load"]): l for l in lines if l.get("scenario") == "sync-fanout"}
    single = {(l.get("label"), l["scenario"]): l for l in lines if l.get("scenario") in ("initial-sync", "messages", "memory", "server-log", "synapse-config")}
    loads = [l for l in lines if l.get("scenario") == "load"]
    names = dict(SERVERS)
    syn_cfg = single.get(("synapse", "synapse-config")) or {}
    quick = " --quick" if meta.get("quick") else ""
    n, r = meta.get("sync_users", "?"), meta.get("sync_rooms", "?")
    any_fanout = next(iter(fanout.values()), {})
    members = any_fanout.get("members_per_room")
    membership = meta.get("sync_membership", "all")
    out = [
        f"Run of {meta.get('date', '?')} by `benches/run{quick}` (section `sync`)"
        f" on {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('mem_total', '?')} of memory,"
        f" Linux {meta.get('kernel', '?')}.",
        "",
        f"- Myelin: `{meta.get('myelin_bin', '?')}`, commit {meta.get('myelin_commit') or 'none'}, writes durable"
        f" (fsync before every answer); status: {status.get('myelin', {}).get('status', 'not run')}.",
        f"- Synapse {meta.get('synapse_version', '?')} on {syn_cfg.get('db') or meta.get('sync_synapse_db', '?')}"
        " (WAL, `synchronous` at SQLite's default, FULL: durable too), rate limits off,"
        f" bcrypt_rounds {syn_cfg.get('bcrypt_rounds', '?')} (registration is not measured);"
        f" status: {status.get('synapse', {}).get('status', 'not run')}. Synapse has no WebSocket: the WebSocket rows"
        " are Myelin's alone.",
        f"- A fresh server and database for this section, one server at a time; rooms of version"
        f" {meta.get('room_version', '?')}, `preset: public_chat`. The load generator (one process) shares the CPUs"
        " with the server.",
    ]
    if loads:
        out.append(
            "- Load average (1 / 5 / 15 min): "
            + "; ".join(f"{l['when']}{'' if l.get('label') == 'all' else ' (' + names.get(l.get('label'), l.get('label')) + ')'}: {l['loadavg'].replace(' ', ' / ')}" for l in loads)
            + "."
        )
    out += ["", "### Delivery: senders and receivers holding syncs", ""]
    who = (
        f"every user is in every room ({r} rooms of {n} members: a message reaches {int(members) - 1 if members else '?'} receivers)"
        if membership == "all"
        else f"user i is in room i mod {r} only ({members or '?'} members a room)"
    )
    out.append(
        f"`myelin-loadgen sync-fanout`: {n} users, {r} rooms; {who}. Every user holds a sync loop from before the"
        " first message to the end: long-poll `GET /sync?since=…&timeout=30000` (filter: timeline limit"
        f" {any_fanout.get('timeline_limit', 100)}, lazy-loaded members), or Myelin's WebSocket"
        " (`docs/websocket.md`, same filter). Messages are `PUT /rooms/{roomId}/send/m.room.message/{txnId}`."
        f" Light load: one message in flight at a time, {meta.get('sync_rate', '?')} a second,"
        f" {meta.get('sync_messages', '?')} messages, rooms in turn. Saturating load: all {n} users send at once,"
        f" one message in flight each, as fast as the server answers, for {meta.get('duration_s', '?')} s."
        " Delivery latency runs from the start of the `PUT` that sent a message (one monotonic clock in the one"
        " load-generator process) to the moment a receiver has read the sync response or WebSocket message that"
        " holds it, over every (message, receiver) pair; the sender's own echo is not counted. A limited timeline"
        " would be filled from `/messages` (counted as late delivery); complete means every receiver saw every"
        " acknowledged message of its rooms. Sends/s counts acknowledged sends per second of wall-clock time, the"
        " wait for the last answers included."
    )
    out += ["", "| Scenario | Measure | Myelin | Synapse | Myelin ÷ Synapse |", "| --- | --- | ---: | ---: | ---: |"]

    def fcell(label, t, load, f):
        l = fanout.get((label, t, load))
        if l is None:
            return "— (no WebSocket)" if label == "synapse" and t == "websocket" else "not run"
        return f(l)

    def fraw(label, t, load, f):
        l = fanout.get((label, t, load))
        return None if l is None else f(l)

    def lat(d):
        return " / ".join(num(d[p]) for p in ("p50", "p95", "p99", "max"))

    def complete(l):
        v = l["delivery"]
        text = f"{v['pairs_delivered']:,} pairs, {v['missing']:,} missing"
        if v.get("duplicates"):
            text += f", {v['duplicates']:,} duplicates"
        if v.get("limited_timelines"):
            text += f", {v['limited_timelines']:,} gaps filled ({v.get('gap_events', 0):,} events)"
        if v["missing"]:
            text = "**incomplete**: " + text
        return text

    titles = {
        ("http", "light"): "long-poll `/sync`, light load",
        ("http", "saturating"): "long-poll `/sync`, saturating load",
        ("websocket", "light"): "WebSocket, light load",
        ("websocket", "saturating"): "WebSocket, saturating load",
    }
    for (t, load), title in titles.items():
        if not any(k[1] == t and k[2] == load for k in fanout):
            continue
        rate = lambda l: l["sends"]["rate_per_s"]
        out.append(
            f"| {title} | sends/s (acknowledged) | "
            + " | ".join(fcell(s, t, load, lambda l: num(rate(l))) for s, _ in SERVERS)
            + f" | {ratio(fraw('myelin', t, load, rate), fraw('synapse', t, load, rate))} |"
        )
        out.append(
            "| | send latency p50 / p95 / p99 / max (ms) | "
            + " | ".join(fcell(s, t, load, lambda l: lat(l["sends"]["latency_ms"])) for s, _ in SERVERS)
            + " | |"
        )
        d50 = lambda l: l["delivery"]["latency_ms"]["p50"]
        out.append(
            "| | delivery latency p50 / p95 / p99 / max (ms) | "
            + " | ".join(fcell(s, t, load, lambda l: lat(l["delivery"]["latency_ms"])) for s, _ in SERVERS)
            + f" | {ratio(fraw('myelin', t, load, d50), fraw('synapse', t, load, d50))} |"
        )
        out.append(
            "| | messages sent / errors; delivery | "
            + " | ".join(fcell(s, t, load, lambda l: f"{l['sends']['ok']:,} / {l['sends']['errors']:,}; {complete(l)}") for s, _ in SERVERS)
            + " | |"
        )

    out += ["", "### Initial sync and history", ""]
    isync = {s: single.get((s, "initial-sync")) for s, _ in SERVERS}
    msgs = {s: single.get((s, "messages")) for s, _ in SERVERS}
    any_is = next((v for v in isync.values() if v), {})
    any_m = next((v for v in msgs.values() if v), {})
    out.append(
        f"`initial-sync`: one user in {any_is.get('rooms', r)} rooms it created, each with"
        f" {any_is.get('history', meta.get('sync_history', '?'))} messages; `GET /sync` without `since`, filter"
        f" `{json.dumps(any_is.get('filter', {}), separators=(',', ':'))}` (timeline limit"
        f" {any_is.get('timeline_limit', '?')}, the spec's and Synapse's default, with lazy-loaded members as Element"
        " asks), one request at a time. Each request has another `timeout` (which an initial sync ignores): Synapse"
        " caches a `/sync` answer for two minutes under a key that includes it, and a cached answer would not"
        f" measure anything. `messages`: a room with {any_m.get('history', meta.get('messages_history', '?'))}"
        f" messages (8 senders), then `GET /rooms/{{roomId}}/messages?dir=b&limit={any_m.get('limit', '?')}`, one at a"
        f" time. Both for {meta.get('duration_s', '?')} s after a {meta.get('warmup_s', 0)} s warm-up."
    )
    out += ["", "| Scenario | Measure | Myelin | Synapse | Myelin ÷ Synapse |", "| --- | --- | ---: | ---: | ---: |"]

    def scell(d, server, f):
        v = d.get(server)
        return "not run" if v is None else f(v)

    def sraw(d, server, f):
        v = d.get(server)
        return None if v is None else f(v)

    def lat4(v):
        l = v["latency_ms"]
        return " / ".join(num(l[p]) for p in ("p50", "p90", "p99", "max"))

    p50 = lambda v: v["latency_ms"]["p50"]
    tp = lambda v: v["throughput_rps"]
    for key, d, title in (("initial-sync", isync, "initial sync"), ("messages", msgs, "`/messages`")):
        out.append(
            f"| {title} | latency p50 / p90 / p99 / max (ms) | "
            + " | ".join(scell(d, s, lat4) for s, _ in SERVERS)
            + f" | {ratio(sraw(d, 'myelin', p50), sraw(d, 'synapse', p50))} |"
        )
        out.append(
            "| | requests/s (one client) | " + " | ".join(scell(d, s, lambda v: num(tp(v))) for s, _ in SERVERS)
            + f" | {ratio(sraw(d, 'myelin', tp), sraw(d, 'synapse', tp))} |"
        )
        if key == "initial-sync":
            out.append(
                "| | rooms / timeline events / bytes in an answer | "
                + " | ".join(scell(d, s, lambda v: f"{v['rooms_returned']} / {v['timeline_events_returned']} / {v['response_bytes']:,}") for s, _ in SERVERS)
                + " | |"
            )
        else:
            out.append(
                "| | events in an answer (of which messages) / bytes | "
                + " | ".join(
                    scell(d, s, lambda v: f"{v['events_returned']['min']:,}" + (f"–{v['events_returned']['max']:,}" if v['events_returned']['max'] != v['events_returned']['min'] else "")
                          + f" ({v['messages_returned']:,}) / {v['response_bytes']:,}")
                    for s, _ in SERVERS
                )
                + " | |"
            )
        out.append("| | ok / errors | " + " | ".join(scell(d, s, lambda v: f"{v['ok']:,} / {v['errors']:,}") for s, _ in SERVERS) + " | |")
    rss = {s: single.get((s, "memory")) for s, _ in SERVERS}
    out.append(
        "| memory, after the whole section | server VmRSS / VmHWM (MiB) | "
        + " | ".join("not run" if rss[s] is None else f"{mib(rss[s].get('vmrss_kib'))} / {mib(rss[s].get('vmhwm_kib'))}" for s, _ in SERVERS)
        + f" | {ratio((rss['myelin'] or {}).get('vmrss_kib'), (rss['synapse'] or {}).get('vmrss_kib'))} |"
    )

    # --- targets
    out += ["", "### Targets (issue 4)", ""]

    def verdict(ok):
        return "not measured" if ok is None else ("**met**" if ok else "**not met**")

    sat_m = fraw("myelin", "http", "saturating", lambda l: l["sends"]["rate_per_s"])
    sat_s = fraw("synapse", "http", "saturating", lambda l: l["sends"]["rate_per_s"])
    send_ratio = sat_m / sat_s if sat_m and sat_s else None
    out.append(
        f"- Send rate at least {SYNC_TARGETS['send_ratio']:.0f}× Synapse's, {n} users over {r} rooms, saturating load:"
        f" {verdict(None if send_ratio is None else send_ratio >= SYNC_TARGETS['send_ratio'])}"
        + ("" if send_ratio is None else f" ({send_ratio:.1f}×: {num(sat_m)} against {num(sat_s)} messages/s).")
    )
    for t, tname in (("http", "long-poll"), ("websocket", "WebSocket")):
        l = fanout.get(("myelin", t, "light"))
        if l is None:
            continue
        p = l["delivery"]["latency_ms"]["p50"]
        out.append(
            f"- Delivery p50 at most {SYNC_TARGETS['delivery_p50_ms']:.0f} ms at light load with durable writes ({tname}):"
            f" {verdict(p <= SYNC_TARGETS['delivery_p50_ms'] and l['delivery']['missing'] == 0)} ({num(p)} ms"
            + (f"; {l['delivery']['missing']:,} pairs missing" if l["delivery"]["missing"] else "")
            + ")."
        )
    v = isync.get("myelin")
    out.append(
        f"- Initial sync at most {SYNC_TARGETS['initial_sync_ms']:.0f} ms for {r} rooms (p50):"
        f" {verdict(None if v is None else v['latency_ms']['p50'] <= SYNC_TARGETS['initial_sync_ms'] and not v['errors'])}"
        + ("" if v is None else f" ({num(v['latency_ms']['p50'])} ms, p99 {num(v['latency_ms']['p99'])} ms;"
           f" {v['rooms']} rooms of {v['history']} messages).")
    )
    v = msgs.get("myelin")
    out.append(
        f"- `/messages` at most {SYNC_TARGETS['messages_ms']:.0f} ms for 1 000 messages (p50):"
        f" {verdict(None if v is None else v['latency_ms']['p50'] <= SYNC_TARGETS['messages_ms'] and v['events_returned']['min'] >= 1000)}"
        + ("" if v is None else f" ({num(v['latency_ms']['p50'])} ms, p99 {num(v['latency_ms']['p99'])} ms;"
           f" {v['events_returned']['min']:,} events an answer).")
    )
    v = rss.get("myelin")
    out.append(
        f"- Resident memory at most {SYNC_TARGETS['rss_mib']:.0f} MiB:"
        f" {verdict(None if not v or not v.get('vmrss_kib') else v['vmrss_kib'] / 1024 <= SYNC_TARGETS['rss_mib'])}"
        + ("" if not v or not v.get("vmrss_kib") else f" (VmRSS {mib(v['vmrss_kib'])} MiB after the section; peak VmHWM {mib(v.get('vmhwm_kib'))} MiB).")
    )

    notes = []
    for label, st in status.items():
        if st.get("status") != "ok" and st.get("detail"):
            notes.append(f"- {label}: {st['status']}: {st['detail']}")
    for (label, t, load), l in sorted(fanout.items()):
        name = names.get(label, label)
        for e in l["sends"].get("error_samples", []):
            notes.append(f"- {name} sync-fanout {t} {load}, sends: {e['count']:,} × `{e['error'][:160]}`")
        for e in l["syncs"].get("error_samples", []):
            notes.append(f"- {name} sync-fanout {t} {load}, syncs: {e['count']:,} × `{e['error'][:160]}`")
        rate = l.get("rate_per_s")
        if load == "light" and rate and l["sends"]["rate_per_s"] < 0.9 * rate:
            notes.append(
                f"- {name} sync-fanout {t} light: could not keep the pace of {num(rate)} messages/s"
                f" ({num(l['sends']['rate_per_s'])}/s): a send took longer than the interval, so this load was not light for it."
            )
        if l["delivery"]["missing"]:
            notes.append(f"- {name} sync-fanout {t} {load}: {l['delivery']['missing']:,} of {l['delivery']['pairs_expected']:,} (message, receiver) pairs never delivered: an error.")
    for key, d in (("initial-sync", isync), ("messages", msgs)):
        for s, name in SERVERS:
            for e in (d.get(s) or {}).get("error_samples", []):
                notes.append(f"- {name} {key}: {e['count']:,} × `{e['error'][:160]}`")
    for s, name in SERVERS:
        v = msgs.get(s)
        if v and v["events_returned"]["min"] < v["limit"]:
            notes.append(f"- {name} `/messages` returned {v['events_returned']['min']:,} events where {v['limit']:,} were asked for.")
    sl = single.get(("myelin", "server-log"))
    if sl and sl.get("count"):
        notes.append(f"- Myelin logged {sl['count']:,} warnings or errors; the first: `{sl.get('first', '')[:300]}`")
    elif sl is not None:
        notes.append("- Myelin logged no warning and no error during the section.")
    if notes:
        out += ["", "Errors and notes:", ""] + notes
    out += ["", "Raw lines: `docs/benchmarks/sync.jsonl`."]
    return "\n".join(out)


def render_federation(lines: list[dict]) -> str:
    meta = next((l for l in lines if l.get("scenario") == "meta"), {})
    status = {l["label"]: l for l in lines if l.get("scenario") == "status"}
    runs = {l["label"]: l for l in lines if l.get("scenario") == "federation-latency"}
    quick = " --quick" if meta.get("quick") else ""
    out = [
        f"Run of {meta.get('date', '?')} by `benches/run{quick}` (section `federation`)"
        f" on {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), {meta.get('mem_total', '?')} of memory,"
        f" Linux {meta.get('kernel', '?')}.",
        "",
        f"- Myelin: `{meta.get('myelin_bin', '?')}`, commit {meta.get('myelin_commit') or 'none'}.",
        f"- Synapse {meta.get('synapse_version', '?')} on {meta.get('fed_synapse_db', '?')}.",
        "- Each pair: both servers started fresh with TLS federation listeners on 127.0.0.1 (a CA of the"
        " run); a user of the sender creates a public room, a user of the receiver joins it through the"
        " sender's server and holds a long-poll `/sync`; then"
        f" {meta.get('fed_messages', '?')} messages, one at a time at {meta.get('fed_rate', '?')} per second,"
        " after 5 unmeasured ones. Arrival: from the start of `PUT /send` on the sender to the receiver's"
        " sync response holding the message, read whole.",
        "",
        "| pair | arrival p50 | p90 | p99 | max | send p50 | delivered | missing | join |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, name in FED_PAIRS:
        r = runs.get(key)
        if not r:
            why = status.get(key, {})
            out.append(f"| {name} | not measured: {why.get('status', 'not run')} {why.get('detail', '')} | | | | | | | |")
            continue
        d, s = r["delivery"], r["sends"]
        l = d["latency_ms"]
        out.append(
            f"| {name} | {num(l['p50'])} ms | {num(l['p90'])} ms | {num(l['p99'])} ms | {num(l['max'])} ms"
            f" | {num(s['latency_ms']['p50'])} ms | {d['delivered']:,} | {d['missing']:,} | {num(r['join_ms'])} ms |"
        )
    mm = runs.get("myelin-myelin")
    if mm:
        p50 = mm["delivery"]["latency_ms"]["p50"]
        met = "met" if p50 <= FED_TARGET_P50_MS else "**not met**"
        out += ["", f"Target (issue 6): Myelin → Myelin median arrival at most {FED_TARGET_P50_MS:g} ms: {num(p50)} ms, {met}."]
    loads = [l for l in lines if l.get("scenario") == "load"]
    if loads:
        out += ["", "Load average before each pair: " + ", ".join(f"{l['label']} {l['loadavg']}" for l in loads if l.get("label") != "all") + "."]
    out += ["", "Raw lines: `docs/benchmarks/federation.jsonl`."]
    return "\n".join(out)


def splice(doc_path: str, section: str, kind: str = "http") -> None:
    begin, end, title = MARKERS[kind]
    text = open(doc_path).read() if os.path.exists(doc_path) else DOC_HEAD
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        before = text[: text.index(begin)]
        after = text[text.index(end) + len(end):]
        text = before + block + after
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n" + block + "\n"
    with open(doc_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(doc_path + ".tmp", doc_path)


def main() -> int:
    args = sys.argv[1:]
    kind = "http"
    if args[:1] in (["--storage"], ["--rooms"], ["--sync"], ["--federation"]):
        kind, args = args[0][2:], args[1:]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    renderer = {"http": render, "storage": render_storage, "rooms": render_rooms, "sync": render_sync,
                "federation": render_federation}[kind]
    splice(args[1], renderer(lines), kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
