#!/usr/bin/env bash
# Shared by the bench and build scripts in this directory (sourced, not run).

# write_node_toml DIR NAME EDGE_PORT MESH_BIND SEEDS BACKHAUL_LISTEN TRANSPORT [EXTRA_EDGE_LINES]:
# DIR/node.toml for one loopback node of a bench cluster (region iad, the `lan` mesh profile, the
# cluster key in $KEY, admin on an ephemeral port). SEEDS is a TOML list's inside ("" or
# "\"127.0.0.1:PORT\""); EXTRA_EDGE_LINES go into [edge] as they are. Apps are the caller's.
write_node_toml() {
  cat > "$1/node.toml" <<CFG
[node]
name = "$2"
region = "iad"
[edge]
listen = ["127.0.0.1:$3"]
${8:-}
[mesh]
bind = "$4"
seeds = [$5]
cluster_key = "$KEY"
profile = "lan"
[backhaul]
listen = "$6"
transport = "$7"
[admin]
listen = "127.0.0.1:0"
CFG
}

# write_origin_conf DIR PORT: DIR/nginx.conf for the benches' real origin, nginx answering every
# request itself on 127.0.0.1:PORT (one worker, HTTP/1.1 keep-alive, bodies up to 10 MB).
write_origin_conf() {
  cat > "$1/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_max_body_size 10m;
  server { listen 127.0.0.1:$2; location / { return 200 "hello from nginx\n"; } }
}
CFG
}
