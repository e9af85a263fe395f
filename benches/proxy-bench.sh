#!/usr/bin/env bash
# Side-by-side proxy bench on loopback, alternating rounds within one run, on two cores as issue 17
# asks: the origin and the load generator on core 0, each proxy alone on core 1 with one thread
# (petrel TOKIO_WORKER_THREADS=1, HAProxy nbthread 1, nginx one worker). Rows:
#   HTTP/1.1 keep-alive (wrk -t1 -c32): direct to a backend, HAProxy, nginx, petrel one node, petrel
#     two nodes (the edge has no instance; requests cross the backhaul over HTTP/2 or over QUIC; both
#     nodes on core 1);
#   h2 (h2load -t1 -c32 -m10): HAProxy, nginx and petrel over TLS (ALPN h2), petrel and direct over
#     h2c, two nodes;
#   the same with nginx as the origin (rows *-ngo): HTTP/1.1 and h2c clients, one and two nodes;
#   idle WebSockets: RSS each proxy gains per open idle WebSocket (python3 client, petrel's backend echo).
# Prints medians, min–max, ratios to direct and to HAProxy, and the proxy's CPU time per request
# (user + system from /proc/PID/stat of every process of that proxy, before and after each round,
# divided by the requests the round completed; two-node rows count both nodes).
#
# Needs: a release build, two or more cores, and, from Debian:
#   apt-get install -y haproxy nginx wrk nghttp2-client openssl python3 util-linux
# The release build to measure is the profile-guided one (benches/pgo-build.sh, then
# PETREL_BIN=target/pgo/release/petrel), as production nodes run it; without PETREL_BIN, the plain
# `cargo build --release` one. The binary is named in the output.
# Usage: benches/proxy-bench.sh [rounds (default 3)] [seconds per round (default 5)] [websockets (default 10000;
#   0 skips the idle-connection rounds)]
# Installs nothing; every process it starts is stopped on exit. The WebSocket count is lowered to what
# the open-file limit allows (a proxy holds two sockets per WebSocket).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-3}
SECS=${2:-5}
WS=${3:-10000}
BIN=${PETREL_BIN:-${CARGO_TARGET_DIR:-target}/release/petrel}
for tool in haproxy nginx wrk h2load openssl python3 taskset "$BIN"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing: $tool (see the header of this script)" >&2; exit 2; }
done
MAXWS=$(( ($(ulimit -n) - 400) / 2 / 100 * 100 )) # HAProxy wants 2 × maxconn + a few
if [ "$WS" -gt "$MAXWS" ]; then
  echo "note: open-file limit $(ulimit -n) allows $MAXWS proxied WebSockets per process, not $WS" >&2
  WS=$MAXWS
fi
echo "petrel binary: $BIN"
[ "$(nproc)" -ge 2 ] || { echo "needs two cores (origin and load on 0, proxy on 1)" >&2; exit 2; }
LOAD="taskset -c 0"   # origins and load generators
PROXY="taskset -c 1"  # each proxy, one thread
export TOKIO_WORKER_THREADS=1
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE=$(free_port); HA=$(free_port); NG=$(free_port); PE=$(free_port)
HAS=$(free_port); NGS=$(free_port); PES=$(free_port)
A2=$(free_port); AQ=$(free_port); BM=$(free_port); BB=$(free_port)
ORIG=$(free_port); HAO=$(free_port); HAO2=$(free_port); NGO=$(free_port); NGO2=$(free_port)

$LOAD "$BIN" backend --listen 127.0.0.1:$BE --id bench >/dev/null 2>&1 & PIDS+=($!)

# A real origin: nginx answering every request itself (one worker, HTTP/1.1 keep-alive).
mkdir -p "$WORK/origin"
write_origin_conf "$WORK/origin" "$ORIG"
$LOAD nginx -c "$WORK/origin/nginx.conf" -p "$WORK/origin" >/dev/null 2>&1 & PIDS+=($!)

# One self-signed certificate for localhost, used by all three TLS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/localhost.key" -out "$WORK/localhost.pem" 2>/dev/null
cat "$WORK/localhost.pem" "$WORK/localhost.key" > "$WORK/combined.pem"

cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn $(( (WS > 1000 ? WS : 1000) + 50 ))
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HA
  bind 127.0.0.1:$HAS ssl crt $WORK/combined.pem alpn h2,http/1.1
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BE
frontend fe_ngo
  bind 127.0.0.1:$HAO
  bind 127.0.0.1:$HAO2 proto h2
  default_backend be_ngo
backend be_ngo
  http-reuse always
  server o1 127.0.0.1:$ORIG
CFG
$PROXY haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & HAPID=$!; PIDS+=($HAPID)

cat > "$WORK/nginx.conf" <<CFG
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections $(ulimit -n); }
http {
  access_log off;
  keepalive_requests 1000000;   # the default (1000) closes h2 connections that h2load does not reopen
  upstream be { server 127.0.0.1:$BE; keepalive 256; }
  upstream ngo { server 127.0.0.1:$ORIG; keepalive 256; }
  server {
    listen 127.0.0.1:$NGO;
    listen 127.0.0.1:$NGO2 http2;
    location / { proxy_pass http://ngo; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$NG;
    listen 127.0.0.1:$NGS ssl http2;
    ssl_certificate $WORK/localhost.pem;
    ssl_certificate_key $WORK/localhost.key;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 1h;
    }
  }
}
CFG
$PROXY nginx -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 & NGPID=$!; PIDS+=($NGPID)

# petrel: one node with the instance (plaintext and TLS listeners), and a two-node cluster in which
# edges a2 (sends over HTTP/2) and aq (sends over QUIC) have no instance and reach b's over the backhaul.
KEY="base64:$(head -c 32 /dev/urandom | base64)"
app_toml() {
  mkdir -p "$1/apps"
  cat > "$1/apps/bench.toml" <<CFG
app = "bench"
[http_service]
hosts = ["127.0.0.1", "localhost"]
  [http_service.concurrency]
  type = "requests"
  soft_limit = 20000
  hard_limit = 25000
CFG
  sed -e 's/^app = "bench"/app = "ngo"/' -e 's/^hosts = .*/hosts = ["ngo"]/' "$1/apps/bench.toml" > "$1/apps/ngo.toml"
}
node_toml() { # dir name edge-port mesh-bind seeds backhaul-listen transport extra
  app_toml "$1"
  write_node_toml "$@"
}
mkdir -p "$WORK/p1/certs"; cp "$WORK/localhost.pem" "$WORK/localhost.key" "$WORK/p1/certs/"
node_toml "$WORK/p1" bench-1 "$PE" 127.0.0.1:0 "" 127.0.0.1:0 h2 "tls_listen = [\"127.0.0.1:$PES\"]
certs_dir = \"certs\""
printf '[[instances]]\nid = "bench-1a"\napp = "bench"\naddress = "127.0.0.1:%s"\n' "$BE" >> "$WORK/p1/node.toml"
printf '[[instances]]\nid = "ngo-1a"\napp = "ngo"\naddress = "127.0.0.1:%s"\n' "$ORIG" >> "$WORK/p1/node.toml"
node_toml "$WORK/pb" bench-b "$(free_port)" "127.0.0.1:$BM" "" "127.0.0.1:$BB" h2 ""
printf '[[instances]]\nid = "bench-ba"\napp = "bench"\naddress = "127.0.0.1:%s"\n' "$BE" >> "$WORK/pb/node.toml"
printf '[[instances]]\nid = "ngo-ba"\napp = "ngo"\naddress = "127.0.0.1:%s"\n' "$ORIG" >> "$WORK/pb/node.toml"
node_toml "$WORK/pa2" bench-a2 "$A2" 127.0.0.1:0 "\"127.0.0.1:$BM\"" 127.0.0.1:0 h2 ""
node_toml "$WORK/paq" bench-aq "$AQ" 127.0.0.1:0 "\"127.0.0.1:$BM\"" 127.0.0.1:0 quic ""
declare -A NODEPID
for n in p1 pb pa2 paq; do
  RUST_LOG=warn $PROXY "$BIN" run --config "$WORK/$n/node.toml" >"$WORK/$n.log" 2>&1 & PIDS+=($!)
  NODEPID[$n]=$!
done
PEPID=${NODEPID[p1]}

# Rows ending in -ngo reach the nginx origin; petrel routes them by Host (app "ngo").
declare -A TARGET=([direct]=$BE [haproxy]=$HA [nginx]=$NG [petrel]=$PE [petrel-2n-h2]=$A2 [petrel-2n-quic]=$AQ
  [direct-ngo]=$ORIG [haproxy-ngo]=$HAO [nginx-ngo]=$NGO [petrel-ngo]=$PE [petrel-2n-h2-ngo]=$A2
  [petrel-2n-quic-ngo]=$AQ)
ORDER=(direct haproxy nginx petrel petrel-2n-h2 petrel-2n-quic
  direct-ngo haproxy-ngo nginx-ngo petrel-ngo petrel-2n-h2-ngo petrel-2n-quic-ngo)
host_of() { case "$1" in *-ngo) echo ngo ;; *) echo "127.0.0.1" ;; esac; }
for name in "${ORDER[@]}"; do
  ok=""
  for _ in $(seq 100); do # the two-node edges need the mesh to tell them where the instance is
    if curl -sf -m 2 -o /dev/null -H "Host: $(host_of "$name")" "http://127.0.0.1:${TARGET[$name]}/"; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "$name is not answering on ${TARGET[$name]}" >&2; tail -n 5 "$WORK"/*.log >&2 || true; exit 1; }
done
for port in $HAS $NGS $PES; do
  curl -sfk -m 2 -o /dev/null --http2 "https://localhost:$port/" || { echo "TLS listener $port is not answering" >&2; exit 1; }
done

# The processes whose CPU time a row counts (direct rows: none).
sleep 0.5
NGALL="$NGPID $(pgrep -P "$NGPID" | tr '\n' ' ')"
pids_of() {
  case "$1" in
    direct*) echo "" ;;
    haproxy*) echo "$HAPID" ;;
    nginx*) echo "$NGALL" ;;
    petrel-2n-h2*) echo "${NODEPID[pa2]} ${NODEPID[pb]}" ;;
    petrel-2n-quic*) echo "${NODEPID[paq]} ${NODEPID[pb]}" ;;
    petrel*) echo "$PEPID" ;;
  esac
}
HZ=$(getconf CLK_TCK)
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
us_per_req() { # ticks requests
  awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN{ if (n > 0 && t != "") printf "%.2f", t / hz * 1e6 / n; else print "-" }'
}

# h2 targets: TLS (ALPN h2) for the three proxies, h2c prior knowledge for direct and petrel.
declare -A H2URL=([direct-h2c]="http://127.0.0.1:$BE/" [haproxy-tls]="https://localhost:$HAS/"
  [nginx-tls]="https://localhost:$NGS/" [petrel-tls]="https://localhost:$PES/" [petrel-h2c]="http://127.0.0.1:$PE/"
  [petrel-2n-h2]="http://127.0.0.1:$A2/" [petrel-2n-quic]="http://127.0.0.1:$AQ/"
  [haproxy-h2c-ngo]="http://127.0.0.1:$HAO2/" [nginx-h2c-ngo]="http://127.0.0.1:$NGO2/"
  [petrel-h2c-ngo]="http://127.0.0.1:$PE/" [petrel-2n-h2-ngo]="http://127.0.0.1:$A2/"
  [petrel-2n-quic-ngo]="http://127.0.0.1:$AQ/")
H2ORDER=(direct-h2c haproxy-tls nginx-tls petrel-tls petrel-h2c petrel-2n-h2 petrel-2n-quic
  haproxy-h2c-ngo nginx-h2c-ngo petrel-h2c-ngo petrel-2n-h2-ngo petrel-2n-quic-ngo)

declare -A RPS P99 H2 CPU H2CPU
for r in $(seq "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    pids=$(pids_of "$name"); c0=$(cpu_ticks $pids)
    out=$($LOAD wrk -t1 -c32 -d"${SECS}s" --latency -H "Host: $(host_of "$name")" "http://127.0.0.1:${TARGET[$name]}/" 2>&1)
    c1=$(cpu_ticks $pids)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -z "$errs" ] || echo "round $r $name: $errs" >&2
    RPS[$name]+="$rps "; P99[$name]+="$p99 "
    [ -z "$pids" ] || CPU[$name]+="$(us_per_req $((c1 - c0)) "$n") "
  done
  for name in "${H2ORDER[@]}"; do
    auth=()
    case "$name" in *-ngo) auth=(-H ":authority: ngo") ;; esac
    pids=$(pids_of "$name"); c0=$(cpu_ticks $pids)
    out=$($LOAD h2load -c32 -m10 -D"$SECS" -t1 "${auth[@]}" "${H2URL[$name]}" 2>&1)
    c1=$(cpu_ticks $pids)
    h2=$(awk '/^finished in/ {print $4}' <<<"$out")
    n=$(awk '/^requests:/ {print $8}' <<<"$out")
    bad=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
    [ "${bad:-0}" = 0 ] || echo "round $r $name: $bad requests failed or errored" >&2
    H2[$name]+="$h2 "
    [ -z "$pids" ] || H2CPU[$name]+="$(us_per_req $((c1 - c0)) "$n") "
  done
  echo "round $r done" >&2
done

to_ms() { sed 's/ms$//;s/us$/e-3/;s/\([0-9.]\)s$/\1e3/'; }
median() { tr ' ' '\n' | grep -v '^$' | to_ms | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (" a[1] "–" a[NR] ")"}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
cpu_med() { if [ -z "$1" ]; then echo "-"; else echo "$1" | median | cut -d' ' -f1; fi; }
if [ "$ROUNDS" -gt 0 ]; then
echo
echo "HTTP/1.1 keep-alive, wrk -t1 -c32 on core 0, proxy on core 1, ${ROUNDS} rounds of ${SECS}s, alternating"
echo "(median (min–max); CPU: the proxy's user+system µs per request, median; vs haproxy: req/s ratio, CPU ratio)"
printf "%-20s %-28s %-9s %-10s %-10s %-9s %-10s\n" target "requests/s" "p99 ms" "vs direct" "vs haproxy" "CPU µs" "CPU vs ha"
for name in "${ORDER[@]}"; do
  # Each row is compared with direct and HAProxy to the same origin.
  sfx=""; case "$name" in *-ngo) sfx=-ngo ;; esac
  d=$(echo "${RPS[direct$sfx]}" | median | cut -d' ' -f1); h=$(echo "${RPS[haproxy$sfx]}" | median | cut -d' ' -f1)
  m=$(echo "${RPS[$name]}" | median); v=$(cut -d' ' -f1 <<<"$m")
  p=$(echo "${P99[$name]}" | median | cut -d' ' -f1)
  c=$(cpu_med "${CPU[$name]:-}"); hc=$(cpu_med "${CPU[haproxy$sfx]:-}")
  cr="-"; [ "$c" = "-" ] || cr=$(ratio "$c" "$hc")
  printf "%-20s %-28s %-9s %-10s %-10s %-9s %-10s\n" "$name" "$m" "$p" "$(ratio "$v" "$d")" "$(ratio "$v" "$h")" "$c" "$cr"
done
echo
echo "h2, h2load -c32 -m10 -t1 on core 0, proxy on core 1 (median req/s (min–max)); *-tls: TLS with ALPN h2, others h2c"
echo "(rows *-ngo: nginx origin, compared with haproxy-h2c-ngo; the others with haproxy-tls)"
printf "%-20s %-28s %-10s %-9s %-10s\n" target "requests/s" "vs haproxy" "CPU µs" "CPU vs ha"
for name in "${H2ORDER[@]}"; do
  case "$name" in
    *-ngo) base=haproxy-h2c-ngo ;;
    *) base=haproxy-tls ;;
  esac
  h=$(echo "${H2[$base]}" | median | cut -d' ' -f1)
  m=$(echo "${H2[$name]}" | median)
  c=$(cpu_med "${H2CPU[$name]:-}"); hc=$(cpu_med "${H2CPU[$base]:-}")
  cr="-"; [ "$c" = "-" ] || cr=$(ratio "$c" "$hc")
  printf "%-20s %-28s %-10s %-9s %-10s\n" "$name" "$m" "$(ratio "$(cut -d' ' -f1 <<<"$m")" "$h")" "$c" "$cr"
done
fi

[ "$WS" -gt 0 ] || exit 0

# Idle connections: open $WS through one proxy, hold them idle, read the proxy's RSS, close them.
# mode "ws": WebSockets (upgraded, then silent); mode "keepalive": one plain GET each, then silent;
# mode "h2": TLS with ALPN h2, one GET each (the server's SETTINGS acknowledged), then silent.
cat > "$WORK/ws.py" <<'PY'
import asyncio, base64, os, ssl, struct, sys
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def frame(kind, flags, stream, payload=b""):
  return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
async def h2_get(r, w):
  # :method GET, :scheme https, :path / (static table), :authority localhost (literal, not indexed)
  w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 5, 1, b"\x82\x87\x84\x01\x09localhost"))
  while True:
    head = await asyncio.wait_for(r.readexactly(9), 10)
    size, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    await asyncio.wait_for(r.readexactly(size), 10)
    if kind == 4 and not flags & 1:
      w.write(frame(4, 1, 0))  # SETTINGS ACK
    elif kind == 7:
      raise RuntimeError("GOAWAY")
    elif stream == 1 and kind == 3:
      raise RuntimeError("RST_STREAM")
    elif stream == 1 and kind in (0, 1) and flags & 1:
      return
tls = None
if mode == "h2":  # one context for all connections: building one loads the system's CA store
  tls = ssl.create_default_context(); tls.check_hostname = False; tls.verify_mode = ssl.CERT_NONE
  tls.set_alpn_protocols(["h2"])
async def one(conns, errors):
  try:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                          server_hostname="localhost" if tls else None), 10)
    if mode == "h2":
      alpn = w.get_extra_info("ssl_object").selected_alpn_protocol()
      if alpn != "h2":
        raise RuntimeError(f"ALPN chose {alpn}")
      await h2_get(r, w)
      conns.append(w)
      return
    if mode == "keepalive":
      w.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
      head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
      if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
      length = [int(l.split(b":")[1]) for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:")]
      await asyncio.wait_for(r.readexactly(length[0] if length else 0), 10)
      conns.append(w)
      return
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    conns.append(w)
  except Exception as e:
    errors.append(f"{len(conns)} open: {type(e).__name__} {e}")
async def main():
    conns, errors = [], []
    for i in range(0, n, 250):
        await asyncio.gather(*(one(conns, errors) for _ in range(min(250, n - i))))
        if errors:
            break
    print("open", len(conns), "failed", len(errors), *(["first:", errors[0]] if errors else []), flush=True)
    sys.stdin.readline()  # the script reads RSS now
    for w in conns:
        w.close()
asyncio.run(main())
PY
rss_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
ws_rss() { # mode name port pids...
  local mode=$1 name=$2 port=$3; shift 3
  local before; before=$(rss_kib "$@")
  coproc WSC { python3 "$WORK/ws.py" "$port" "$WS" "$mode"; }
  local line=""
  read -r -t 120 line <&"${WSC[0]}" || true
  local open; open=$(awk '$1=="open" {print $2}' <<<"$line")
  if [ -z "$open" ] || [ "$open" = 0 ]; then
    echo "$name: no $mode connection opened: ${line:-no answer in 120 s}" >&2
    kill "$WSC_PID" 2>/dev/null || true; wait "$WSC_PID" 2>/dev/null || true; sleep 2; return
  fi
  [ "$open" = "$WS" ] || echo "$name: only $open of $WS $mode connections opened (${line#* failed })" >&2
  sleep 3
  local after; after=$(rss_kib "$@")
  echo >&"${WSC[1]}"; wait "$WSC_PID" 2>/dev/null || true
  printf "%-16s %8d KiB before %8d KiB with %d open: %6.1f KiB per connection\n" "$name" "$before" "$after" "$open" \
    "$(awk -v a="$after" -v b="$before" -v n="$open" 'BEGIN{print (a-b)/n}')"
  sleep 2
}
echo
echo "Idle WebSockets: proxy RSS growth per open idle WebSocket ($WS asked for at once; kernel socket buffers not included)"
ws_rss ws nginx "$NG" $(pgrep -P "$NGPID") "$NGPID"
ws_rss ws haproxy "$HA" "$HAPID"
ws_rss ws petrel "$PE" "$PEPID"
echo
echo "Idle keep-alive HTTP/1.1: proxy RSS growth per connection idle after one GET ($WS at once)"
ws_rss keepalive nginx "$NG" $(pgrep -P "$NGPID") "$NGPID"
ws_rss keepalive haproxy "$HA" "$HAPID"
ws_rss keepalive petrel "$PE" "$PEPID"
echo
echo "Idle HTTP/2 over TLS: proxy RSS growth per connection idle after one GET ($WS at once)"
ws_rss h2 nginx "$NGS" $(pgrep -P "$NGPID") "$NGPID"
ws_rss h2 haproxy "$HAS" "$HAPID"
ws_rss h2 petrel "$PES" "$PEPID"
