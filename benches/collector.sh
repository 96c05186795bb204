#!/usr/bin/env bash
# Collector load test: events/s that tagproxy accepts and delivers with GA4
# and Meta CAPI enabled, delivering to local mock destinations, and the
# proxy's peak RSS under that load — for each delivery backend in one run
# (memory, the durable spool, NATS JetStream when nats-server is installed),
# with the spool's fsyncs per second. `nats-sync` is NATS with JetStream's
# `sync_interval: always` (fsync before every acknowledgement, as the
# shipped deploy/nats config sets); it needs a nats-server newer than
# Debian 12's 2.9.10 (set NATS_SERVER=/path/to/nats-server; tests/run.sh
# installs one under target/tools/nats).
#
#   bash benches/collector.sh            # DURATION=10s per run
#   DURATION=5s BATCHES="1 10" BACKENDS="memory spool" bash benches/collector.sh
#   BACKENDS="nats nats-sync" NATS_SERVER=target/tools/nats/bin/nats-server bash benches/collector.sh
#   BATCH_MAX_EVENTS=1 bash benches/collector.sh   # batched delivery off, to compare
#   TAGPROXY=/tmp/tagproxy-old bash benches/collector.sh  # a prebuilt binary (A/B)
#
# Everything runs on 127.0.0.1: nginx answers 204 as both GA4 and Meta (and
# counts what it received in its access log); wrk POSTs batches of events to
# /_tagproxy/t. wrk, nginx and tagproxy share the cores: the figures are for
# comparing runs on this machine, not absolutes.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
BATCHES=${BATCHES:-"1 10"}
BACKENDS=${BACKENDS:-"memory spool nats"}
NATS_SERVER=${NATS_SERVER:-nats-server}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "collector.sh: $*" >&2; exit 1; }
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "installing nginx and wrk…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nginx-light wrk >/dev/null || apt-get install -y -qq nginx wrk >/dev/null
fi
if [ -z "${TAGPROXY:-}" ]; then
    echo "building tagproxy (release)…" >&2
    (cd "$ROOT" && cargo build --release --quiet)
    TAGPROXY="$ROOT/target/release/tagproxy"
fi

TMP=$(mktemp -d -t tagproxy-collector.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ ${KEEP_TMP:-0} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- mock destinations: nginx answering 204, logging one line per request ----
MOCK=$(free_port)
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $TMP/nginx/tmp;
    log_format short '\$request_method \$uri';
    access_log $TMP/nginx/logs/access.log short buffer=64k flush=100ms;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$MOCK; location / { return 204; } }
}
EOF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# --- tagproxy with GA4 + Meta, one instance per backend ------------------------
NATS_PORT=$(free_port)
NATS_SYNC_PORT=$(free_port)
if [[ " $BACKENDS " == *" nats"* ]]; then
    command -v "$NATS_SERVER" >/dev/null || die "$NATS_SERVER not found: install nats-server or drop nats from BACKENDS"
fi
if [[ " $BACKENDS " == *" nats "* ]]; then
    "$NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
    PIDS+=($!)
    sleep 1
fi
if [[ " $BACKENDS " == *" nats-sync "* ]]; then
    cat >"$TMP/nats-sync.conf" <<EOF
listen: 127.0.0.1:$NATS_SYNC_PORT
jetstream {
  store_dir: "$TMP/nats-sync"
  sync_interval: always
}
EOF
    "$NATS_SERVER" -c "$TMP/nats-sync.conf" -t >/dev/null 2>&1 ||
        die "$NATS_SERVER does not accept sync_interval (needs 2.10 or later): $("$NATS_SERVER" --version)"
    "$NATS_SERVER" -c "$TMP/nats-sync.conf" >"$TMP/nats-sync.log" 2>&1 &
    PIDS+=($!)
    sleep 1
fi
TP=
start_tagproxy() { # backend: memory, spool, nats or nats-sync
    local kind=$1 nats_port=$NATS_PORT
    [[ $1 == nats-sync ]] && kind=nats nats_port=$NATS_SYNC_PORT
    PORT=$(free_port)
    ADMIN=$(free_port)
    rm -rf "$TMP/tp"
    mkdir -p "$TMP/tp/tools"
    cat >"$TMP/tp/tagproxy.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
upstream = "http://127.0.0.1:$MOCK"
admin_listen = "127.0.0.1:$ADMIN"
[delivery]
backend = "$kind"
nats_url = "nats://127.0.0.1:$nats_port"
concurrency_per_tool = 64
${BATCH_MAX_EVENTS:+batch_max_events = $BATCH_MAX_EVENTS}
EOF
    cat >"$TMP/tp/tools/ga4.toml" <<EOF
type = "google-analytics-4"
endpoint = "http://127.0.0.1:$MOCK"
[settings]
measurement_id = "G-LOAD123"
[automated]
pageview = true
track = true
ecommerce = true
EOF
    cat >"$TMP/tp/tools/meta.toml" <<EOF
type = "facebook-pixel"
endpoint = "http://127.0.0.1:$MOCK"
[settings]
pixel_id = "1234567890"
access_token = "load-test-token"
[automated]
pageview = true
track = true
ecommerce = true
EOF
    RUST_LOG=warn "$TAGPROXY" serve -c "$TMP/tp/tagproxy.toml" 2>"$TMP/tp.log" &
    TP=$!
    PIDS+=($TP)
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/healthz" 2>/dev/null && break; sleep 0.1; done
    curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/healthz" || die "tagproxy ($1) did not start: $(cat "$TMP/tp.log")"
}
stop_tagproxy() { kill -TERM "$TP" 2>/dev/null || true; wait "$TP" 2>/dev/null || true; }
fsyncs() { curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "tagproxy_spool_fsyncs_total" {print $2}'; }

delivered() { wc -l <"$TMP/nginx/logs/access.log" 2>/dev/null || echo 0; }
# Events the destinations answered 2xx (a batched request carries several).
delivered_events() { curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "tagproxy_deliveries_delivered_total" {print $2}'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$TP/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$TP/status"; }

printf '%-10s %-6s %12s %12s %12s %12s %10s %10s %10s\n' backend batch "requests/s" "accepted/s" "delivered/s" "dest req/s" "p99" "fsyncs/s" "peak RSS"
for backend in $BACKENDS; do
start_tagproxy "$backend"
for n in $BATCHES; do
    # One batch body: a pageview, tracks and an Order Completed, like a page.
    python3 - "$n" >"$TMP/body.json" <<'PY'
import json, sys
n = int(sys.argv[1])
page = {"url": "https://shop.test/checkout?utm_source=news", "title": "Checkout", "referrer": "https://shop.test/cart"}
device = {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": -60}
events = []
for i in range(n):
    if i % 3 == 0:
        e = {"type": "pageview"}
    elif i % 3 == 1:
        e = {"type": "track", "name": "signup", "properties": {"method": "email", "plan_price": 9.5}}
    else:
        e = {"type": "ecommerce", "name": "Order Completed", "properties": {"order_id": f"A{i}", "total": 27.5, "currency": "USD",
             "products": [{"product_id": "P1", "name": "Mug", "price": 14.5, "quantity": 1}, {"product_id": "P2", "name": "Tee", "price": 13, "quantity": 1}]}}
    e.update({"page": page, "device": device, "ts": 1764000000000})
    events.append(e)
print(json.dumps(events))
PY
    cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local f = io.open("$TMP/body.json"); wrk.body = f:read("*a"); f:close()
EOF
    before=$(delivered)
    events_before=$(delivered_events)
    fsyncs_before=$(fsyncs)
    start=$(date +%s.%N)
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$TMP/post.lua" "http://127.0.0.1:$PORT/_tagproxy/t")
    # Let the queues drain (deliveries run behind the collector's answers).
    last=-1
    for _ in $(seq 300); do
        now=$(delivered_events)
        [[ $now == "$last" ]] && break
        last=$now
        sleep 0.5
    done
    end=$(date +%s.%N)
    fsyncs_after=$(fsyncs)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    [[ -z $non2xx ]] || echo "warning: $non2xx non-2xx answers" >&2
    # Events answered 200 (a 503 is not accepted: the browser sends it again).
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    events=$(python3 -c "print(round(($total - ${non2xx:-0}) * $n / ${DURATION%s}))")
    requests=$(( $(delivered) - before ))
    deliveries=$(python3 -c "print(round($(delivered_events) - $events_before))")
    per_s=$(python3 -c "print(round($deliveries / ($end - $start)))")
    req_s=$(python3 -c "print(round($requests / ($end - $start)))")
    secs=${DURATION%s}
    fsync_rate=$(python3 -c "print(round((${fsyncs_after:-0} - ${fsyncs_before:-0}) / $secs))")
    printf '%-10s %-6s %12s %12s %12s %12s %10s %10s %7s MB\n' "$backend" "$n" "$rps" "$events" "$per_s" "$req_s" "$p99" "$fsync_rate" "$(($(hwm_kb) / 1024))"
done
stop_tagproxy
done
echo "(delivered/s: deliveries GA4 + Meta answered 2xx per second, load plus drain, 2 per event; dest req/s: requests they received, fewer than deliveries when batched)" >&2
