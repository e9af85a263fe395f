#!/usr/bin/env bash
# Builds petrel and starts one node (config/single/node.toml) with two built-in backends.
# Ctrl-C drains the node and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/petrel
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin" backend --listen 127.0.0.1:9001 --id hello-1 & pids+=($!)
"$bin" backend --listen 127.0.0.1:9002 --id hello-2 & pids+=($!)
"$bin" check --config config/single/node.toml
"$bin" run --config config/single/node.toml & node=$!
sleep 0.5
cat <<'MSG'

petrel is running: one node (region iad), app "hello" on two instances (soft 4 / hard 5 each).
Try:
  curl -i -H 'Host: hello' http://127.0.0.1:8080/                 # see Petrel-Route and X-Backend-Id
  curl -s --http2-prior-knowledge http://hello.localhost:8080/headers
  for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: hello' 'http://127.0.0.1:8080/sleep?ms=2000' & done; wait
                                                                   # 10 × 200, 2 × 503 at once (hard limit)
  curl -s http://127.0.0.1:9090/v1/instances                       # live load per instance
  curl -s http://127.0.0.1:9090/metrics | grep petrel_
Ctrl-C to drain and stop.
MSG
wait "$node"
