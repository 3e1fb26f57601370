#!/usr/bin/env bash
# The whole test suite (what CI runs through .ci/run). Installs what it needs when missing;
# a missing component is an error, never a silent skip.
#
#   scripts/test.sh            everything (~10 min on 2 cores from a cold cache)
#   FUZZ_SECONDS=60 scripts/test.sh    longer fuzzing per target (default 10)
#   AUTOBAHN=full scripts/test.sh      all 517 Autobahn cases (adds ~15 min)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p .tmp
passed=0
failed_stages=()

stage() {
  local name="$1"; shift
  echo
  echo "=== $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - start)) s)"
  else
    failed_stages+=("$name")
    echo "=== $name: FAILED ($((SECONDS - start)) s)"
  fi
}

need() {
  command -v "$1" >/dev/null || { echo "test.sh: '$1' is required and missing" >&2; exit 2; }
}
need cargo; need python3; need node; need npm

# Debian packages the tests use, installed when missing (`apt-get update` at most once a run).
apt_updated=
apt_install() {
  echo "test.sh: installing $*"
  if [[ -z $apt_updated ]]; then
    apt-get update || return
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}
# The TLS interop test generates its certificate with the openssl CLI.
command -v openssl >/dev/null || apt_install openssl
# The HTTP/2 interop test drives the server with the curl CLI (Debian's is built with nghttp2).
command -v curl >/dev/null || apt_install curl
# The Redis backend's tests (crates/broker-redis/tests) start real redis-server processes.
command -v redis-server >/dev/null || apt_install redis-server
# The proxy tests (tests/interop/node/scale-out-proxy.test.mjs) run the documented
# configurations in deploy/ for real.
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install nginx-light
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || apt_install haproxy
# The browser tests (tests/interop/node/browser-*.test.mjs) drive Debian's Chromium.
[[ -x /usr/bin/chromium ]] || apt_install chromium

# The venv is (re)installed when requirements.txt changed since the last install.
python_env() {
  local req=tests/interop/python/requirements.txt stamp=.tmp/venv/.installed
  if [[ ! -x .tmp/venv/bin/pytest || ! -f $stamp || $req -nt $stamp ]]; then
    python3 -m venv .tmp/venv
    .tmp/venv/bin/pip install -q --disable-pip-version-check -r "$req" && touch "$stamp"
  fi
}

node_env() {
  (cd tests/interop/node && npm ci --silent --no-audit --no-fund)
}

stage "format" cargo fmt --all -- --check
stage "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# Before the Rust tests: crates/auth/tests/pyjwt.rs verifies tokens minted by PyJWT from it.
stage "python environment" bash -c "$(declare -f python_env); python_env"
stage "unit, property and integration tests" cargo test --workspace --locked
stage "release build" cargo build --release --locked -p switchboard -p socketio-app
stage "cli round trip (publish / subscribe)" bash tests/cli/roundtrip.sh
stage "python websockets interop" bash -c "$(declare -f python_env); python_env && .tmp/venv/bin/python -m pytest -q tests/interop/python"
stage "node ws interop" bash -c "$(declare -f node_env); node_env && cd tests/interop/node && node --test"
stage "autobahn conformance (${AUTOBAHN:-quick})" scripts/conformance.sh "${AUTOBAHN:-quick}"
stage "autobahn client conformance (${AUTOBAHN:-quick})" scripts/conformance-client.sh "${AUTOBAHN:-quick}"
stage "fuzz (${FUZZ_SECONDS:-10} s per target)" env FUZZ_FEATURES="${FUZZ_FEATURES:-strict}" scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
stage "bench harness builds" cargo build --release --locked --manifest-path bench/Cargo.toml

echo
if [[ ${#failed_stages[@]} -gt 0 ]]; then
  printf 'failed stage: %s\n' "${failed_stages[@]}"
fi
echo "test.sh: $passed passed, ${#failed_stages[@]} failed"
[[ ${#failed_stages[@]} -eq 0 ]]
