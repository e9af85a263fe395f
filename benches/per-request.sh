#!/usr/bin/env bash
# What one proxied request costs petrel and HAProxy, counted rather than timed, so the figures hold
# on a shared, noisy machine: user-space instructions per request (valgrind's callgrind) and system
# calls per request (strace -c). Both proxies have one thread and send to the same nginx origin.
#
# Instructions: each proxy runs under callgrind twice, once for SMALL requests and once for LARGE;
# the difference divided by LARGE − SMALL removes start-up, TLS handshakes and shutdown, which are
# the same in both runs (h2load opens the same connections). System calls: strace -c attached for
# one run of LARGE requests after a warm-up; the count of each call divided by the requests.
#
# Rows: HTTP/1.1 keep-alive (h2load --h1 -c8) and h2 over TLS (h2load -c8 -m10, ALPN h2).
#
# Needs: a release build (the profile-guided one: benches/pgo-build.sh, then
# PETREL_BIN=target/pgo/release/petrel; without PETREL_BIN, cargo build --release's), and, from Debian:
#   apt-get install -y valgrind strace haproxy nginx nghttp2-client openssl python3 curl
# Usage: benches/per-request.sh [small (default 1000)] [large (default 11000)]
# Takes about 5 minutes (callgrind runs each proxy some 50 times slower). Every process it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${1:-1000}
LARGE=${2:-11000}
BIN=$(realpath "${PETREL_BIN:-${CARGO_TARGET_DIR:-target}/release/petrel}")
for tool in valgrind callgrind_annotate strace haproxy nginx h2load openssl python3 curl "$BIN"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing: $tool (see the header of this script)" >&2; exit 2; }
done
echo "petrel binary: $BIN"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ORIG=$(free_port)
cat > "$WORK/origin.conf" <<CFG
worker_processes 1;
daemon off;
pid $WORK/origin.pid;
error_log $WORK/origin.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIG; location / { return 200 "hello from nginx\n"; } }
}
CFG
nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/localhost.key" -out "$WORK/localhost.pem" 2>/dev/null
cat "$WORK/localhost.pem" "$WORK/localhost.key" > "$WORK/combined.pem"
mkdir -p "$WORK/certs" "$WORK/apps"
cp "$WORK/localhost.pem" "$WORK/localhost.key" "$WORK/certs/"
cat > "$WORK/apps/ngo.toml" <<CFG
app = "ngo"
[http_service]
hosts = ["127.0.0.1", "localhost"]
  [http_service.concurrency]
  type = "requests"
  soft_limit = 20000
  hard_limit = 25000
CFG

# Starts both proxies (under the given wrapper) on fresh ports; sets PE PES HA HAS PPID_ HPID.
start() {
  PE=$(free_port); PES=$(free_port); HA=$(free_port); HAS=$(free_port)
  cat > "$WORK/node.toml" <<CFG
[node]
name = "p1"
region = "iad"
[edge]
listen = ["127.0.0.1:$PE"]
tls_listen = ["127.0.0.1:$PES"]
certs_dir = "certs"
[mesh]
bind = "127.0.0.1:0"
cluster_key = "base64:$(head -c 32 /dev/urandom | base64)"
profile = "lan"
[backhaul]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[instances]]
id = "ngo-1"
app = "ngo"
address = "127.0.0.1:$ORIG"
CFG
  cat > "$WORK/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HA
  bind 127.0.0.1:$HAS ssl crt $WORK/combined.pem alpn h2,http/1.1
  default_backend be
backend be
  http-reuse always
  server o1 127.0.0.1:$ORIG
CFG
  # shellcheck disable=SC2086
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn $1 petrel "$BIN" run --config "$WORK/node.toml" >"$WORK/petrel.log" 2>&1 & PPID_=$!; PIDS+=($PPID_)
  # shellcheck disable=SC2086
  $1 haproxy haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & HPID=$!; PIDS+=($HPID)
  for url in "http://127.0.0.1:$PE/" "http://127.0.0.1:$HA/"; do
    for _ in $(seq 300); do curl -sf -m 2 -o /dev/null "$url" && break; sleep 0.2; done
    curl -sf -m 2 -o /dev/null "$url" || { echo "$url is not answering" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1; }
  done
}
stop() { kill -INT "$PPID_" 2>/dev/null || true; kill -TERM "$HPID" 2>/dev/null || true; wait "$PPID_" "$HPID" 2>/dev/null || true; }
load() { # row port count
  case "$1" in
    h1) h2load --h1 -c8 -n "$3" "http://127.0.0.1:$2/" ;;
    h2tls) h2load -c8 -m10 -n "$3" "https://localhost:$2/" ;;
  esac 2>&1 | grep -q " $3 succeeded" || { echo "h2load: not all $3 requests succeeded on $2" >&2; exit 1; }
}
plain() { exec "${@:2}"; }
callgrind() { exec valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$1.%p" "${@:2}"; }
instructions() { # name: sum of every callgrind file of that name
  local t=0 f n
  for f in "$WORK"/cg."$1".*; do
    n=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
    t=$((t + ${n:-0}))
  done
  rm -f "$WORK"/cg."$1".*
  echo "$t"
}

declare -A IR SC
for row in h1 h2tls; do
  for n in "$SMALL" "$LARGE"; do
    start callgrind
    if [ "$row" = h1 ]; then load h1 "$PE" "$n"; load h1 "$HA" "$n"; else load h2tls "$PES" "$n"; load h2tls "$HAS" "$n"; fi
    stop
    IR[$row,petrel,$n]=$(instructions petrel)
    IR[$row,haproxy,$n]=$(instructions haproxy)
  done
  start plain
  for who in petrel haproxy; do
    if [ "$who" = petrel ]; then pid=$PPID_; port=$PE; tport=$PES; else pid=$HPID; port=$HA; tport=$HAS; fi
    [ "$row" = h2tls ] && port=$tport
    load "$row" "$port" 2000 # warm-up: connections and pools
    strace -c -f -p "$pid" -o "$WORK/sc" 2>/dev/null & st=$!
    sleep 0.5
    load "$row" "$port" "$LARGE"
    kill -INT "$st"; wait "$st" 2>/dev/null || true
    SC[$row,$who]=$(awk -v n="$LARGE" '$NF == "total" {printf "%.2f", $4 / n}' "$WORK/sc")
    SC[$row,$who,detail]=$(awk -v n="$LARGE" '$4 ~ /^[0-9]+$/ && $NF != "total" && $4 / n >= 0.05 {e = ($5 ~ /^[0-9]+$/) ? sprintf(" (%.2f failed)", $5 / n) : ""; printf "%s %.2f%s, ", $NF, $4 / n, e}' "$WORK/sc")
  done
  stop
done

per() { python3 -c "print(round(($2 - $1) / ($LARGE - $SMALL) / 1000, 1))"; }
echo "per request, one thread each, nginx origin ($((LARGE - SMALL)) requests counted)"
printf "%-6s %-8s %14s %10s   %s\n" row proxy "k instructions" syscalls "syscalls per request, by call"
for row in h1 h2tls; do
  for who in haproxy petrel; do
    printf "%-6s %-8s %14s %10s   %s\n" "$row" "$who" "$(per "${IR[$row,$who,$SMALL]}" "${IR[$row,$who,$LARGE]}")" \
      "${SC[$row,$who]}" "${SC[$row,$who,detail]%, }"
  done
  pi=$(per "${IR[$row,petrel,$SMALL]}" "${IR[$row,petrel,$LARGE]}")
  hi=$(per "${IR[$row,haproxy,$SMALL]}" "${IR[$row,haproxy,$LARGE]}")
  echo "$row: petrel / HAProxy = $(python3 -c "print(round($pi / $hi, 2))")× instructions, $(python3 -c "print(round(${SC[$row,petrel]} / ${SC[$row,haproxy]}, 2))")× system calls"
done
