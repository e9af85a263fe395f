#!/usr/bin/env bash
# Builds petrel with profile-guided optimization (PGO; the rustc book, "Profile-guided
# Optimization"), the build that production nodes and the benchmarks should run:
#   1. an instrumented release build (-Cprofile-generate) into target/pgo-train: petrel and every
#      crate linked into it (with --target, build scripts and proc macros are left out, so every
#      profile written is petrel's);
#   2. training traffic through it, the traffic the benchmarks send: one node in front of nginx
#      over HTTP/1.1 (GETs with wrk, POSTs with h2load) and h2 over TLS; two nodes over the
#      HTTP/2 and the QUIC backhaul;
#   3. the profiles merged with llvm-profdata, and the final release build (-Cprofile-use) into
#      target/pgo. The binary: target/pgo/release/petrel.
# Why: petrel's request path runs through many crates (hyper, h2, tokio, http, rustls), and
# callgrind's cache model shows about 23 times HAProxy's instruction-cache misses per request.
# PGO lays the hot code out together and its branches the way they go. What it saves is in the
# README, "Benchmarks".
#
# Needs: the toolchain's own llvm-profdata (rustup component add llvm-tools), and from Debian:
#   apt-get install -y nginx wrk nghttp2-client openssl python3 curl
# Usage: benches/pgo-build.sh [seconds of traffic per row (default 8)]
# Takes about 9 minutes on 2 cores once the crates are downloaded (two release builds from
# scratch, each directory about the size of target/release). Every process it starts is stopped on
# exit. A profile made from older code still builds (rustc skips the functions that changed), but
# rerun this script after changing the request path.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
SECS=${1:-8}
ROOT=$(pwd)
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
[ -x "$PROFDATA" ] || { echo "missing: $PROFDATA (rustup component add llvm-tools)" >&2; exit 2; }
for tool in nginx wrk h2load openssl python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (see the header of this script)" >&2; exit 2; }
done
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do # a drained node exits within seconds; none is waited on for longer
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
RAW="$WORK/profiles"
mkdir -p "$RAW"

echo "== 1/3 instrumented build (target/pgo-train)"
CARGO_TARGET_DIR="$TARGET/pgo-train" RUSTFLAGS="-Cprofile-generate=$RAW" \
  cargo build --release --locked --target "$HOST"
BIN="$TARGET/pgo-train/$HOST/release/petrel"

echo "== 2/3 training traffic, ${SECS}s per row"
# Ports free for both TCP and UDP (the mesh and QUIC are UDP), all held at once so that no two are
# the same, then released for the processes below.
read -r ORIG PE PES A2 AQ BM BB PBE < <(python3 -c '
import socket
held, ports = [], []
while len(ports) < 8:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close(); continue
    held += [t, u]; ports.append(port)
print(*ports)')
mkdir -p "$WORK/origin"
write_origin_conf "$WORK/origin" "$ORIG"
nginx -c "$WORK/origin/nginx.conf" -p "$WORK/origin" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 50); do curl -sf -m 1 -o /dev/null "http://127.0.0.1:$ORIG/" && break; sleep 0.1; done
curl -sf -m 1 -o /dev/null "http://127.0.0.1:$ORIG/" || { echo "nginx did not start:" >&2; cat "$WORK/origin/nginx.err" >&2; exit 1; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/localhost.key" -out "$WORK/localhost.pem" 2>/dev/null
KEY="base64:$(head -c 32 /dev/urandom | base64)"
node_toml() { # dir name edge-port mesh-bind seeds backhaul-listen transport extra-edge-lines
  mkdir -p "$1/apps"
  printf 'app = "ngo"\n[http_service]\nhosts = ["127.0.0.1", "localhost"]\n  [http_service.concurrency]\n  type = "requests"\n  soft_limit = 20000\n  hard_limit = 25000\n' > "$1/apps/ngo.toml"
  write_node_toml "$@"
}
mkdir -p "$WORK/p1/certs"; cp "$WORK/localhost.pem" "$WORK/localhost.key" "$WORK/p1/certs/"
node_toml "$WORK/p1" one "$PE" 127.0.0.1:0 "" 127.0.0.1:0 h2 "tls_listen = [\"127.0.0.1:$PES\"]
certs_dir = \"certs\""
node_toml "$WORK/pb" owner "$PBE" "127.0.0.1:$BM" "" "127.0.0.1:$BB" h2 ""
for n in p1 pb; do
  printf '[[instances]]\nid = "ngo-%s"\napp = "ngo"\naddress = "127.0.0.1:%s"\n' "$n" "$ORIG" >> "$WORK/$n/node.toml"
done
node_toml "$WORK/pa2" edge-h2 "$A2" 127.0.0.1:0 "\"127.0.0.1:$BM\"" 127.0.0.1:0 h2 ""
node_toml "$WORK/paq" edge-quic "$AQ" 127.0.0.1:0 "\"127.0.0.1:$BM\"" 127.0.0.1:0 quic ""
NODES=()
for n in p1 pb pa2 paq; do
  (cd "$WORK/$n" && exec env RUST_LOG=warn "$BIN" run --config node.toml) >"$WORK/$n.log" 2>&1 &
  PIDS+=($!); NODES+=($!)
done
for port in $PE $A2 $AQ; do # the two-node edges answer once the mesh has told them where ngo is
  ok=""
  for _ in $(seq 150); do curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/" && { ok=1; break; }; sleep 0.2; done
  [ -n "$ok" ] || { echo "the node on $port is not answering" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1; }
done
head -c 4096 /dev/urandom > "$WORK/body"
# Training on error paths would optimize the wrong code: every row must be all 2xx.
wrk_row() {
  local out
  out=$(wrk -t1 -c32 -d"${SECS}s" "$1" 2>&1) || { echo "wrk failed on $1:" >&2; echo "$out" >&2; exit 1; }
  grep -E 'Requests/sec' <<<"$out"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "errors training on $1:" >&2; echo "$out" >&2; exit 1; fi
}
h2load_row() {
  local out
  out=$(h2load "$@" 2>&1) || { echo "h2load $* failed:" >&2; echo "$out" >&2; exit 1; }
  grep -E '^requests:' <<<"$out"
  awk '/^requests:/ { bad = $10 + $12 } /^status codes:/ { bad += $5 + $7 + $9 } END { exit bad > 0 }' <<<"$out" \
    || { echo "errors training with h2load $*:" >&2; echo "$out" >&2; exit 1; }
}
wrk_row "http://127.0.0.1:$PE/"
h2load_row --h1 -c8 -n 20000 -d "$WORK/body" "http://127.0.0.1:$PE/"
h2load_row -c32 -m10 -t1 -D"$SECS" "https://localhost:$PES/"
wrk_row "http://127.0.0.1:$A2/"
wrk_row "http://127.0.0.1:$AQ/"
# Profiles are written as each node exits; a drained node exits by itself.
for p in "${NODES[@]}"; do kill -TERM "$p"; done
for p in "${NODES[@]}"; do
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { echo "node $p did not exit within 30 s" >&2; exit 1; }
done
ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "petrel wrote no profiles" >&2; exit 1; }

echo "== 3/3 merge, and the final build (target/pgo)"
"$PROFDATA" merge -o "$WORK/petrel.profdata" "$RAW"/*.profraw
CARGO_TARGET_DIR="$TARGET/pgo" RUSTFLAGS="-Cprofile-use=$WORK/petrel.profdata" \
  cargo build --release --locked --target "$HOST"
cp "$TARGET/pgo/$HOST/release/petrel" "$TARGET/pgo/release-petrel.tmp"
mkdir -p "$TARGET/pgo/release"
mv "$TARGET/pgo/release-petrel.tmp" "$TARGET/pgo/release/petrel"
echo "built: $TARGET/pgo/release/petrel"
