#!/usr/bin/env python3
"""Complement results: `go test -json` output to JSON lines, a summary, and the ratchet.

    results.py convert GO_TEST_JSON RESULTS_JSONL   one line per test and subtest, then a summary
    results.py check PASSING_TXT RESULTS_JSONL      fails (exit 1) if a listed test did not pass
    results.py passing RESULTS_JSONL                prints the top-level tests that passed
    results.py regex PASSING_TXT                    the `go test -run` pattern for the listed tests
    results.py progress                             echoes top-level results from `go test -json` on stdin

A line of RESULTS_JSONL: {"package": "tests/csapi", "test": "TestLogin", "subtest": null or
"parallel/POST_/login_...", "result": "pass" | "fail" | "skip", "elapsed": seconds}. A test that
started and never ended (the run timed out, or the test binary panicked) counts as a failure, with
"note" saying so.

PASSING_TXT: one top-level test name a line; `#` starts a comment. A listed test passes when
Go reports it passed: every subtest passed or was skipped. A listed test that was skipped, failed
or did not run at all is a ratchet failure.
"""

import json
import re
import sys
from collections import OrderedDict

MODULE_PREFIX = "github.com/matrix-org/complement/"


def short_package(package):
    return package[len(MODULE_PREFIX):] if package.startswith(MODULE_PREFIX) else package


def convert(go_json_path, out_path):
    results = OrderedDict()  # (package, full test name) -> record
    with open(go_json_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            name = event.get("Test")
            if not name:
                continue
            key = (short_package(event.get("Package", "")), name)
            action = event.get("Action")
            if action == "run":
                results.setdefault(key, None)
            elif action in ("pass", "fail", "skip"):
                results[key] = {"result": action, "elapsed": event.get("Elapsed", 0)}
    records = []
    for (package, name), outcome in results.items():
        test, _, subtest = name.partition("/")
        record = {"package": package, "test": test, "subtest": subtest or None}
        if outcome is None:
            record.update(result="fail", elapsed=None, note="started but never finished (timeout or panic)")
        else:
            record.update(outcome)
        records.append(record)
    with open(out_path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    summarize(records)


def load(results_path):
    with open(results_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def counts(records):
    c = {"pass": 0, "fail": 0, "skip": 0}
    for r in records:
        c[r["result"]] += 1
    return c


def summarize(records):
    top = [r for r in records if r["subtest"] is None]
    sub = [r for r in records if r["subtest"] is not None]
    t, s = counts(top), counts(sub)
    print(f"top-level tests: {t['pass']} passed, {t['fail']} failed, {t['skip']} skipped ({len(top)} run)")
    print(f"subtests:        {s['pass']} passed, {s['fail']} failed, {s['skip']} skipped ({len(sub)} run)")
    failed = sorted(r["test"] for r in top if r["result"] == "fail")
    if failed:
        print("failed top-level tests: " + " ".join(failed))
    # The line CI log readers look for.
    print(f"complement: {t['pass']} passed, {t['fail']} failed, {t['skip']} skipped")


def listed(passing_path):
    names = []
    with open(passing_path, encoding="utf-8") as f:
        for line in f:
            name = line.split("#", 1)[0].strip()
            if name:
                if not re.fullmatch(r"Test\w+", name):
                    sys.exit(f"results: {passing_path}: not a top-level test name: {name!r}")
                names.append(name)
    return names


def check(passing_path, results_path):
    want = listed(passing_path)
    got = {}
    for r in load(results_path):
        if r["subtest"] is None:
            # A name in two packages must pass in both.
            if got.get(r["test"], "pass") == "pass":
                got[r["test"]] = r["result"]
    bad = [(name, got.get(name, "did not run")) for name in want if got.get(name) != "pass"]
    for name, result in bad:
        print(f"ratchet: {name}: {result}")
    if bad:
        print(f"ratchet: {len(bad)} of the {len(want)} tests in {passing_path} did not pass")
        return 1
    print(f"ratchet: all {len(want)} tests in {passing_path} passed")
    return 0


def passing(results_path):
    top = {}
    for r in load(results_path):
        if r["subtest"] is None:
            top.setdefault(r["test"], []).append(r["result"])
    for name in sorted(top):
        if all(result == "pass" for result in top[name]):
            print(name)


def regex(passing_path):
    print("^(" + "|".join(listed(passing_path)) + ")$")


def progress():
    done = 0
    for line in sys.stdin:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        name, action = event.get("Test"), event.get("Action")
        if name and "/" not in name and action in ("pass", "fail", "skip"):
            done += 1
            print(f"{done:4} {action.upper():4} {name} ({event.get('Elapsed', 0):.1f} s)", flush=True)
        elif not name and action == "fail":
            print(f"     FAIL package {short_package(event.get('Package', ''))}", flush=True)


def main(argv):
    commands = {
        "convert": (convert, 2),
        "check": (check, 2),
        "passing": (passing, 1),
        "regex": (regex, 1),
        "progress": (progress, 0),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.exit(__doc__)
    function, _ = commands[argv[1]]
    return function(*argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
