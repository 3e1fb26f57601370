#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingserver against switchboard-client's WebSocket (the client role:
# masking, the client side of the close handshake, permessage-deflate as a client), compared
# case by case with conformance/expected-results.json (every case OK but the suite's
# INFORMATIONAL ones).
#
#   scripts/conformance-client.sh [quick|full|CASES]     (same case sets as conformance.sh)
#
# Installs the Autobahn runner from ../shared/tools/autobahn when missing; builds the client
# example (cargo build --release -p switchboard-client --example autobahn).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/../shared/tools/autobahn"
VENV="${AUTOBAHN_VENV:-$ROOT/.tmp/autobahn-venv}"
MODE="${1:-quick}"
case "$MODE" in
  quick) CASES='"1.*","2.*","3.*","4.*","5.*","6.*","7.*","8.*","9.*","10.*","12.1.1","12.2.1","12.3.1","12.4.1","12.5.1","13.1.1","13.2.1","13.3.1","13.4.1","13.5.1","13.6.1","13.7.1"' ;;
  full) CASES='"*"' ;;
  *) CASES="\"${MODE//,/\",\"}\"" ;;
esac

[[ -d "$TOOLS" ]] || { echo "conformance-client: $TOOLS missing (../shared must sit beside the checkout)" >&2; exit 2; }
"$TOOLS/install.sh" "$VENV" >/dev/null
cargo build --release --locked -q -p switchboard-client --example autobahn
CLIENT="$ROOT/target/release/examples/autobahn"

PORT="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
OUT="$ROOT/.tmp/autobahn-client-report"
rm -rf "$OUT"
mkdir -p "$OUT"
cat >"$OUT/fuzzingserver.json" <<JSON
{
  "url": "ws://127.0.0.1:$PORT",
  "outdir": "$OUT",
  "options": {"closeHandshakeTimeout": 5},
  "cases": [$CASES],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$OUT" && exec "$VENV/bin/wstest" -m fuzzingserver -s "$OUT/fuzzingserver.json") >"$OUT/wstest.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.1
done
timeout "${TIMEOUT:-2400}" "$CLIENT" "ws://127.0.0.1:$PORT" switchboard-client

python3 "$ROOT/conformance/compare.py" "$OUT/index.json" "$ROOT/conformance/expected-results.json" \
  conformance-client switchboard-client
