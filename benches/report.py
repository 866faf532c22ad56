#!/usr/bin/env python3
"""Turn the JSON lines of one benches/run into the HTTP section of docs/benchmarks.md.

    benches/report.py RESULTS.jsonl DOC.md
    benches/report.py --storage STORAGE.jsonl DOC.md
    benches/report.py --rooms ROOMS.jsonl DOC.md

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
"""

import json
import os
import sys

MARKERS = {
    "http": ("<!-- http-bench:begin -->", "<!-- http-bench:end -->", "## HTTP: Myelin and Synapse"),
    "storage": ("<!-- storage-bench:begin -->", "<!-- storage-bench:end -->", "## Storage: durable writes and group commit"),
    "rooms": ("<!-- rooms-bench:begin -->", "<!-- rooms-bench:end -->", "## Rooms: sending events and state lookups"),
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
    if args[:1] in (["--storage"], ["--rooms"]):
        kind, args = args[0][2:], args[1:]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    renderer = {"http": render, "storage": render_storage, "rooms": render_rooms}[kind]
    splice(args[1], renderer(lines), kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
