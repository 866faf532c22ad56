#!/usr/bin/env python3
"""Turn the JSON lines of one benches/run into the HTTP section of docs/benchmarks.md.

    benches/report.py RESULTS.jsonl DOC.md
    benches/report.py --storage STORAGE.jsonl DOC.md

Rewrites only what lies between the markers below (appending them, and
creating DOC.md, if missing). Standard library only.

Lines of RESULTS.jsonl, told apart by "scenario":
  meta          one, the machine and the run's parameters
  status        one per server: "ok", or why it was not measured
  setup-users   myelin-loadgen's registration summary
  login, whoami, account-data   myelin-loadgen's result lines
  memory        one per measured server, from /proc after the runs
"""

import json
import os
import sys

MARKERS = {
    "http": ("<!-- http-bench:begin -->", "<!-- http-bench:end -->", "## HTTP: Myelin and Synapse"),
    "storage": ("<!-- storage-bench:begin -->", "<!-- storage-bench:end -->", "## Storage: durable writes and group commit"),
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
    if args[:1] == ["--storage"]:
        kind, args = "storage", args[1:]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    splice(args[1], render(lines) if kind == "http" else render_storage(lines), kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
