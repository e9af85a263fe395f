#!/usr/bin/env bash
# nginx test origin for petrel's conformance suite.
#
#   nginx_origin.sh PORT WS_UPSTREAM_PORT DIR
#
# Writes DIR/nginx.conf from nginx.conf.template (next to this script), a
# 1 MiB DIR/www/big, then execs nginx in the foreground (single process) with
# pid, temp paths and config all inside DIR; error_log goes to stderr (warn),
# no access log. PORT is chosen by the caller (nginx cannot report port 0).
# Prints exactly one stdout line, `origin listening on 127.0.0.1:PORT`, once
# nginx actually accepts on PORT (a detached watcher prints it; the exec keeps
# this script's PID as nginx's PID, so SIGTERM to it stops nginx).
# WS_UPSTREAM_PORT is the strict_h11.py origin for /echo /ws /sse /trailers /early-413.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 PORT WS_UPSTREAM_PORT DIR" >&2
    exit 2
fi
PORT=$1
WS_PORT=$2
DIR=$3
NGINX=${NGINX:-/usr/sbin/nginx}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case "$PORT$WS_PORT" in *[!0-9]*) echo "ports must be numbers" >&2; exit 2;; esac

mkdir -p "$DIR/tmp" "$DIR/www"
DIR=$(cd "$DIR" && pwd)
case "$DIR" in *[\|\&\\]*) echo "DIR must not contain | & or \\" >&2; exit 2;; esac

# Running as root: nginx would otherwise switch to `nobody`; keep root so the
# files we just wrote in DIR are readable/writable without chown games.
USER_LINE=""
if [ "$(id -u)" = 0 ]; then USER_LINE="user root;"; fi

sed -e "s|@PORT@|$PORT|g" \
    -e "s|@WS_UPSTREAM_PORT@|$WS_PORT|g" \
    -e "s|@DIR@|$DIR|g" \
    -e "s|@USER_LINE@|$USER_LINE|g" \
    "$HERE/nginx.conf.template" > "$DIR/nginx.conf"

[ -s "$DIR/www/big" ] || head -c 1048576 /dev/urandom > "$DIR/www/big"

# Fail before announcing anything if the config is broken or PORT is taken.
"$NGINX" -e stderr -t -q -c "$DIR/nginx.conf" -p "$DIR"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use" >&2
    exit 1
fi

# Detached readiness watcher (double fork: not a child of nginx). It prints
# the line once PORT accepts, or gives up after ~10 s or when nginx is gone.
NGINX_PID=$$
( (
    for _ in $(seq 1 500); do
        kill -0 "$NGINX_PID" 2>/dev/null || exit 0
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "origin listening on 127.0.0.1:$PORT"
            exit 0
        fi
        sleep 0.02
    done
) & )

exec "$NGINX" -e stderr -c "$DIR/nginx.conf" -p "$DIR"
