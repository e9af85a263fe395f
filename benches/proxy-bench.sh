#!/usr/bin/env bash
# Side-by-side proxy bench on loopback: direct to a backend, through HAProxy, nginx and petrel
# (one node), in alternating rounds within one run. Prints medians, min–max and ratios.
#
# Needs: a release build (cargo build --release) and, from Debian:
#   apt-get install -y haproxy nginx wrk nghttp2-client
# Usage: benches/proxy-bench.sh [rounds (default 3)] [seconds per round (default 5)]
# Installs nothing; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
BIN=${PETREL_BIN:-${CARGO_TARGET_DIR:-target}/release/petrel}
for tool in haproxy nginx wrk h2load "$BIN"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing: $tool (see the header of this script)" >&2; exit 2; }
done
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE=$(free_port); HA=$(free_port); NG=$(free_port); PE=$(free_port)

"$BIN" backend --listen 127.0.0.1:$BE --id bench >/dev/null 2>&1 & PIDS+=($!)

cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HA
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE
CFG
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)

cat > "$WORK/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server 127.0.0.1:$BE; keepalive 256; }
  server {
    listen 127.0.0.1:$NG;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CFG
nginx -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=($!)

mkdir -p "$WORK/petrel/apps"
cat > "$WORK/petrel/apps/bench.toml" <<CFG
app = "bench"
[http_service]
hosts = ["127.0.0.1"]
  [http_service.concurrency]
  type = "requests"
  soft_limit = 5000
  hard_limit = 10000
CFG
cat > "$WORK/petrel/node.toml" <<CFG
[node]
name = "bench-1"
region = "iad"
[edge]
listen = ["127.0.0.1:$PE"]
[mesh]
bind = "127.0.0.1:0"
[backhaul]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[instances]]
id = "bench-1a"
app = "bench"
address = "127.0.0.1:$BE"
CFG
RUST_LOG=warn "$BIN" run --config "$WORK/petrel/node.toml" >/dev/null 2>&1 & PIDS+=($!)
sleep 1.5

declare -A TARGET=([direct]=$BE [haproxy]=$HA [nginx]=$NG [petrel]=$PE)
ORDER=(direct haproxy nginx petrel)
for name in "${ORDER[@]}"; do
  curl -sf -o /dev/null -H 'Host: bench' "http://127.0.0.1:${TARGET[$name]}/" || { echo "$name is not answering" >&2; exit 1; }
done

# wrk: HTTP/1.1 keep-alive, 2 threads, 64 connections. h2load: h2c prior knowledge, 64 clients x 10 streams
# (only petrel and the direct backend speak h2c here; HAProxy and nginx get h2 only with TLS).
declare -A RPS P99 H2
for r in $(seq "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    out=$(wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:${TARGET[$name]}/" 2>&1)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    RPS[$name]+="$rps "; P99[$name]+="$p99 "
    if [ "$name" = direct ] || [ "$name" = petrel ]; then
      h2=$(h2load -c64 -m10 -D"$SECS" -t2 "http://127.0.0.1:${TARGET[$name]}/" 2>&1 | awk '/^finished in/ {print $4}')
      H2[$name]+="$h2 "
    fi
  done
  echo "round $r done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sed 's/ms$//;s/us$/e-3/' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (" a[1] "–" a[NR] ")"}'; }
echo
echo "HTTP/1.1 keep-alive, wrk -t2 -c64, ${ROUNDS} rounds of ${SECS}s, alternating (median (min–max))"
printf "%-8s %-28s %-14s %-10s %-10s\n" target "requests/s" "p99 latency" "vs direct" "vs haproxy"
d=$(echo "${RPS[direct]}" | median | cut -d' ' -f1); h=$(echo "${RPS[haproxy]}" | median | cut -d' ' -f1)
for name in "${ORDER[@]}"; do
  m=$(echo "${RPS[$name]}" | median); v=$(cut -d' ' -f1 <<<"$m")
  printf "%-8s %-28s %-14s %-10s %-10s\n" "$name" "$m" "$(echo "${P99[$name]}" | tr ' ' '\n' | grep -v '^$' | sort | sed -n "$(( (ROUNDS+1)/2 ))p")" \
    "$(awk -v a="$v" -v b="$d" 'BEGIN{printf "%.2f", a/b}')" "$(awk -v a="$v" -v b="$h" 'BEGIN{printf "%.2f", a/b}')"
done
echo
echo "h2c, h2load -c64 -m10 (median req/s (min–max))"
for name in direct petrel; do printf "%-8s %s\n" "$name" "$(echo "${H2[$name]}" | median)"; done
