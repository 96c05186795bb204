#!/usr/bin/env bash
# Load test: tagproxy vs nginx `sub_filter`, same origin, same worker count,
# over plain HTTP and over HTTPS (both terminating TLS with the same P-256
# certificate), plus TLS handshakes per second.
#
#   bash benches/load.sh                 # DURATION=10s per run
#   DURATION=5s CONNS=32 bash benches/load.sh
#
# Starts, all on 127.0.0.1 and all removed on exit:
#   origin      nginx serving a generated 20 KB page and the shared 318 KB blog
#               page as text/html (identity, no gzip)
#   tagproxy    injecting (auto_inject = true) and a second one passing through
#               (auto_inject = false), release build
#   nginx       reverse proxy with keep-alive to the origin: one server with
#               `sub_filter '<head>' '<head><script …>'`, one without
# Both injecting proxies also listen with TLS ("tls" scenarios: the same
# pages over HTTPS on kept-alive connections; "handshake": every request on a
# new TLS connection, for a 3-byte file, so req/s = full handshakes/s).
# Runs wrk against each pair, alternating tagproxy and nginx, then prints
# requests/s, p99 latency and the proxy's CPU time per request, with the
# ratios tagproxy/nginx. wrk, the origin and the proxies share the machine's
# cores: read the ratios, not the absolutes.
#
# Env: DURATION (10s; whole seconds), WARMUP (2s), THREADS (wrk threads, 2), CONNS (32),
# WORKERS (proxy threads / nginx workers, default nproc), ROUNDS (1),
# ONLY (comma-separated scenarios, e.g. "inject 20KB,pass 20KB"),
# KEEP_TMP=1 keeps the temp dir (configs, logs), PAGES (the shared fixture
# pages folder), TAGPROXY (a prebuilt binary: skips `cargo build --release`).
set -euo pipefail

DURATION=${DURATION:-10s}
[[ $DURATION =~ ^[0-9]+s$ ]] || { echo "load.sh: DURATION is whole seconds, like 10s" >&2; exit 2; }
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
WORKERS=${WORKERS:-$(nproc)}
ROUNDS=${ROUNDS:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PAGES=${PAGES:-$ROOT/../shared/fixtures/pages}
BLOG="$PAGES/blog-post-318k.html"
TAG='<script src="/_tagproxy/s.js" referrerpolicy="origin"></script>'

die() { echo "load.sh: $*" >&2; exit 1; }
[[ -f $BLOG ]] || die "missing $BLOG (the shared fixtures)"

# --- tools -------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "installing nginx and wrk…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nginx-light wrk >/dev/null ||
        apt-get install -y -qq nginx wrk >/dev/null
fi
command -v curl >/dev/null || die "curl is needed"
# A browser's User-Agent: tagproxy gives bots (curl, wrk's default) no script.
UA="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
# What Chrome sends with a navigation besides its User-Agent. Over https
# tagproxy's bot score expects client hints and fetch metadata: a bare
# client there scores as a disguised bot and gets no script.
BROWSER=(-H 'sec-ch-ua: "Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'
    -H 'sec-ch-ua-mobile: ?0' -H 'sec-ch-ua-platform: "Linux"'
    -H 'sec-fetch-site: none' -H 'sec-fetch-mode: navigate' -H 'sec-fetch-dest: document'
    -H 'accept-language: en-US,en;q=0.9')
nginx -V 2>&1 | grep -q -- --with-http_sub_module || die "this nginx has no sub_filter"

if [[ -z ${TAGPROXY:-} ]]; then
    echo "building tagproxy (release)…" >&2
    (cd "$ROOT" && cargo build --release --quiet)
    TAGPROXY="$ROOT/target/release/tagproxy"
fi

# --- scratch space and cleanup -----------------------------------------------
TMP=$(mktemp -d -t tagproxy-load.XXXXXX)
# Started as root, nginx runs its workers as nobody: they must reach the files.
chmod 755 "$TMP"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo "load.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# A port nothing listens on (checked, not reserved: good enough on loopback).
used_ports=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        [[ $used_ports == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            echo "$p"
            return
        fi
    done
    die "no free port"
}

wait_up() { # url name log
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return
        sleep 0.1
    done
    tail -n 20 "$3" >&2 || true
    die "$2 did not come up at $1 within 30 s (KEEP_TMP=1 keeps the logs in $TMP)"
}

# nginx in a private prefix: every path it writes is under $1.
nginx_conf() { # dir workers http-block
    mkdir -p "$1"/{logs,tmp}
    cat >"$1/nginx.conf" <<EOF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 1000000;
$3
}
EOF
}
start_nginx() { # dir
    nginx -p "$1" -c "$1/nginx.conf" -g 'daemon off;' 2>>"$1/logs/stderr.log" &
    PIDS+=($!)
}

# --- origin --------------------------------------------------------------------
WWW="$TMP/www"
mkdir -p "$WWW"
{
    printf '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    printf '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    printf '<title>Product 42 - Demo Shop</title>\n<link rel="stylesheet" href="/shop.css">\n'
    printf '</head>\n<body>\n<main>\n'
    for i in $(seq 0 129); do
        printf '<div class="card" id="item-%d"><h2>Item %d</h2><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.</p><a href="/p/%d">View</a></div>\n' "$i" "$i" "$i"
    done
    printf '</main>\n</body>\n</html>\n'
} >"$WWW/page-20k.html"
cp "$BLOG" "$WWW/blog-318k.html"
printf 'ok\n' >"$WWW/tiny.txt"

# One certificate for both TLS servers: ECDSA P-256, as most sites now use.
mkdir -p "$TMP/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" 2>/dev/null
chmod 644 "$TMP/tls/key.pem"

ORIGIN_PORT=$(free_port)
nginx_conf "$TMP/origin" 1 "
    sendfile on;
    tcp_nopush on;
    gzip off;
    open_file_cache max=100;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WWW;
        types { text/html html; text/plain txt; }
    }"
start_nginx "$TMP/origin"
wait_up "http://127.0.0.1:$ORIGIN_PORT/page-20k.html" "origin nginx" "$TMP/origin/logs/error.log"

# --- tagproxy: injecting and passthrough ---------------------------------------
TP_INJECT_PORT=$(free_port)
TP_PASS_PORT=$(free_port)
TP_TLS_PORT=$(free_port)
tagproxy_start() { # name port auto_inject [tls port]
    local dir="$TMP/$1"
    mkdir -p "$dir/tools" "$dir/data"
    cat >"$dir/tagproxy.toml" <<EOF
tools_dir = "$dir/tools"
data_dir = "$dir/data"

[server]
listen = "127.0.0.1:$2"
upstream = "http://127.0.0.1:$ORIGIN_PORT"
admin_listen = "127.0.0.1:0"

[settings]
auto_inject = $3
EOF
    if [[ -n ${4:-} ]]; then
        printf '[server.tls]\nlisten = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\n' \
            "$4" "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >>"$dir/tagproxy.toml"
    fi
    (cd "$dir" && TOKIO_WORKER_THREADS=$WORKERS RUST_LOG=warn exec "$TAGPROXY" serve -c "$dir/tagproxy.toml") \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=($!)
}
tagproxy_start tagproxy-inject "$TP_INJECT_PORT" true "$TP_TLS_PORT"
TP_INJECT_PID=$!
tagproxy_start tagproxy-pass "$TP_PASS_PORT" false
TP_PASS_PID=$!

# --- nginx reverse proxy: sub_filter and plain ---------------------------------
NG_INJECT_PORT=$(free_port)
NG_PASS_PORT=$(free_port)
NG_TLS_PORT=$(free_port)
proxy_common="
        proxy_pass http://origin;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_buffer_size 16k;
        proxy_buffers 64 16k;"
nginx_conf "$TMP/nginx-proxy" "$WORKERS" "
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NG_INJECT_PORT;
        location / {
$proxy_common
            proxy_set_header Accept-Encoding \"\";
            sub_filter '<head>' '<head>$TAG';
            sub_filter_once on;
        }
    }
    server {
        listen 127.0.0.1:$NG_TLS_PORT ssl;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
$proxy_common
            proxy_set_header Accept-Encoding \"\";
            sub_filter '<head>' '<head>$TAG';
            sub_filter_once on;
        }
    }
    server {
        listen 127.0.0.1:$NG_PASS_PORT;
        location / {
$proxy_common
        }
    }"
start_nginx "$TMP/nginx-proxy"
NG_PROXY_PID=$!

wait_up "http://127.0.0.1:$TP_INJECT_PORT/page-20k.html" "tagproxy (inject)" "$TMP/tagproxy-inject/stderr.log"
wait_up "http://127.0.0.1:$TP_PASS_PORT/page-20k.html" "tagproxy (passthrough)" "$TMP/tagproxy-pass/stderr.log"
wait_up "http://127.0.0.1:$NG_INJECT_PORT/page-20k.html" "nginx (sub_filter)" "$TMP/nginx-proxy/logs/error.log"
wait_up "http://127.0.0.1:$NG_PASS_PORT/page-20k.html" "nginx (passthrough)" "$TMP/nginx-proxy/logs/error.log"

# --- check that each endpoint does what it is measured for ------------------------
check() { # url want-tag(yes/no) origin-file
    local body="$TMP/check.html" n
    curl -fsS -k -A "$UA" "${BROWSER[@]}" -o "$body" "$1" || die "GET $1 failed"
    n=$({ grep -o -F "$TAG" "$body" || true; } | wc -l)
    if [[ $2 == yes ]]; then
        [[ $n == 1 ]] || die "$1: expected the tag once, found it $n times"
        [[ $(stat -c %s "$body") == $(($(stat -c %s "$3") + ${#TAG})) ]] ||
            die "$1: body is not the page plus exactly the tag"
    else
        [[ $n == 0 ]] || die "$1: passthrough endpoint returned the tag"
        cmp -s "$body" "$3" || die "$1: passthrough body differs from the origin's"
    fi
}
for page in page-20k blog-318k; do
    check "http://127.0.0.1:$TP_INJECT_PORT/$page.html" yes "$WWW/$page.html"
    check "http://127.0.0.1:$NG_INJECT_PORT/$page.html" yes "$WWW/$page.html"
    check "http://127.0.0.1:$TP_PASS_PORT/$page.html" no "$WWW/$page.html"
    check "http://127.0.0.1:$NG_PASS_PORT/$page.html" no "$WWW/$page.html"
    check "https://127.0.0.1:$TP_TLS_PORT/$page.html" yes "$WWW/$page.html"
    check "https://127.0.0.1:$NG_TLS_PORT/$page.html" yes "$WWW/$page.html"
done
check "https://127.0.0.1:$TP_TLS_PORT/tiny.txt" no "$WWW/tiny.txt"
check "https://127.0.0.1:$NG_TLS_PORT/tiny.txt" no "$WWW/tiny.txt"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "checked: inject endpoints add the tag once, passthrough endpoints are byte-exact" >&2

# --- measure -------------------------------------------------------------------
# wrk → "REQS P99_MS"; fails on errors or non-2xx answers.
run_wrk() { # url duration [close: a new connection per request]
    local out close=()
    [[ ${3:-} == close ]] && close=(-H "Connection: close")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency -H "User-Agent: $UA" "${BROWSER[@]}" "${close[@]}" "$1") || die "wrk failed on $1"
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        echo "$out" >&2
        die "errors while loading $1"
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%"       { p99 = ms($2) }
        END { printf "%.0f %.3f\n", rps, p99 }
    ' <<<"$out"
}

declare -A RPS P99 CPU
SCENARIOS=("pass 20KB" "pass 318KB" "inject 20KB" "inject 318KB" "tls 20KB" "tls 318KB" "handshake")
# ONLY="inject 20KB,pass 20KB" runs a subset.
if [[ -n ${ONLY:-} ]]; then
    IFS=, read -r -a SCENARIOS <<<"$ONLY"
fi
target() { # proxy scenario -> "URL PID MODE" (PID: the process whose CPU time counts)
    local port pid page scheme=http mode=keep
    case "$1 ${2%% *}" in
        "tagproxy pass") port=$TP_PASS_PORT pid=$TP_PASS_PID ;;
        "tagproxy inject") port=$TP_INJECT_PORT pid=$TP_INJECT_PID ;;
        "tagproxy tls" | "tagproxy handshake") port=$TP_TLS_PORT pid=$TP_INJECT_PID scheme=https ;;
        "nginx pass") port=$NG_PASS_PORT pid=$NG_PROXY_PID ;;
        "nginx inject") port=$NG_INJECT_PORT pid=$NG_PROXY_PID ;;
        "nginx tls" | "nginx handshake") port=$NG_TLS_PORT pid=$NG_PROXY_PID scheme=https ;;
    esac
    case $2 in
        *20KB) page=page-20k.html ;;
        *318KB) page=blog-318k.html ;;
        handshake) page=tiny.txt mode=close ;;
    esac
    echo "$scheme://127.0.0.1:$port/$page $pid $mode"
}

# CPU time (clock ticks, user + system) of a process and its children
# (nginx's workers; tagproxy's threads are already in its own line).
cpu_ticks() { # pid
    local pid total=0
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
add() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { print a + b }'; }

echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency; proxies with $WORKERS workers; $(nproc) cores" >&2
for round in $(seq "$ROUNDS"); do
    for s in "${SCENARIOS[@]}"; do
        # Alternate who goes first from round to round.
        order=(tagproxy nginx)
        ((round % 2 == 0)) && order=(nginx tagproxy)
        for proxy in "${order[@]}"; do
            read -r url pid mode <<<"$(target "$proxy" "$s")"
            run_wrk "$url" "$WARMUP" "$mode" >/dev/null
            before=$(cpu_ticks "$pid")
            res=$(run_wrk "$url" "$DURATION" "$mode")
            after=$(cpu_ticks "$pid")
            read -r rps p99 <<<"$res"
            # Proxy CPU per request: unlike req/s, barely moved by other load.
            cpu=$(awk -v t=$((after - before)) -v us="$TICK_US" -v r="$rps" -v d="${DURATION%s}" \
                'BEGIN { printf "%.1f", t * us / (r * d) }')
            echo "  round $round  $proxy  $s: $rps req/s, p99 $p99 ms, $cpu us CPU/req" >&2
            RPS[$proxy,$s]=$(add "${RPS[$proxy,$s]:-}" "$rps")
            P99[$proxy,$s]=$(add "${P99[$proxy,$s]:-}" "$p99")
            CPU[$proxy,$s]=$(add "${CPU[$proxy,$s]:-}" "$cpu")
        done
    done
done

# --- report (means over rounds) ------------------------------------------------------
avg() { awk -v s="$1" -v n="$ROUNDS" 'BEGIN { printf "%.3f", s / n }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
printf '%-12s | %-25s | %-25s | %s\n' "" "tagproxy" "nginx" "tagproxy/nginx"
printf '%-12s | %9s %7s %7s | %9s %7s %7s | %6s %6s %6s\n' \
    scenario "req/s" "p99 ms" "us/req" "req/s" "p99 ms" "us/req" "req/s" "p99" "CPU"
printf '%s\n' "-------------+---------------------------+---------------------------+---------------------"
for s in "${SCENARIOS[@]}"; do
    tr=$(avg "${RPS[tagproxy,$s]}") tp=$(avg "${P99[tagproxy,$s]}") tc=$(avg "${CPU[tagproxy,$s]}")
    nr=$(avg "${RPS[nginx,$s]}") np=$(avg "${P99[nginx,$s]}") nc=$(avg "${CPU[nginx,$s]}")
    printf '%-12s | %9.0f %7.2f %7.1f | %9.0f %7.2f %7.1f | %6s %6s %6s\n' \
        "$s" "$tr" "$tp" "$tc" "$nr" "$np" "$nc" "$(div "$tr" "$nr")" "$(div "$tp" "$np")" "$(div "$tc" "$nc")"
done
echo
for size in 20KB 318KB; do
    [[ -n ${RPS[tagproxy,inject $size]:-} && -n ${RPS[tagproxy,pass $size]:-} ]] || continue
    printf 'inject/passthrough req/s, %-5s: tagproxy %s, nginx %s\n' "$size" \
        "$(div "${RPS[tagproxy,inject $size]}" "${RPS[tagproxy,pass $size]}")" \
        "$(div "${RPS[nginx,inject $size]}" "${RPS[nginx,pass $size]}")"
done
echo "(us/req: the proxy's own CPU time per request. wrk -t$THREADS -c$CONNS -d$DURATION x$ROUNDS;"
echo " $WORKERS proxy workers; origin nginx 1 worker; $(nproc) cores shared by all; load before: $LOAD0)"
