#!/usr/bin/env python3
"""Compare an Autobahn report with conformance/expected-results.json, stricter than run.sh:
NON-STRICT, a wrong close code or UNCLEAN is a regression too. The expectation lists every
case as OK but the ones the suite never calls OK (INFORMATIONAL: 7.1.6, 7.13.*).

    compare.py INDEX_JSON EXPECTED_JSON LABEL [AGENT]

AGENT picks the agent in the report (default: the only one). Exit 0 only if every case of
the report matches and the report is not empty."""
import json
import sys

index, expected_path, label = sys.argv[1:4]
agents = json.load(open(index))
report = agents.get(sys.argv[4]) if len(sys.argv) > 4 else next(iter(agents.values()), None)
if not report:
    sys.exit(f"{label}: no results in {index}")
expected = json.load(open(expected_path))
bad = []
for case, r in sorted(report.items()):
    want = expected.get(case, {"behavior": "OK", "behaviorClose": "OK"})
    got = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    if got != {k: want[k] for k in got}:
        bad.append(f"{case}: got {got}, expected {want}")
for line in bad:
    print(f"{label}:", line)
print(f"{label}: {len(report) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
