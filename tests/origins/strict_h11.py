#!/usr/bin/env python3
# Strict HTTP/1.1 test origin for petrel's conformance suite, built on Python
# `h11` (HTTP/1.1) and `wsproto` (WebSocket). It refuses with 400 anything a
# well-behaved proxy must never forward to an origin (absolute-form targets,
# hop-by-hop headers, duplicate Host/Cookie, petrel-internal-* headers, ...)
# and offers endpoints for headers, echo, early 413, 103, SSE, trailers,
# status codes, Expect: 100-continue, WebSocket echo, slow answers and stats.
#
#   python3 strict_h11.py --listen 127.0.0.1:0 --id NAME [--idle-close-ms N] [--verbose]
#
# After binding it prints exactly one line to stdout,
#   origin listening on 127.0.0.1:PORT
# and nothing else ever goes to stdout. Stderr stays quiet unless --verbose
# (so a parent that never drains the pipe cannot block us). SIGTERM/SIGINT exit.

import argparse
import ast
import base64
import hashlib
import http
import json
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

import h11

try:
    import wsproto.events as wse
    from wsproto.connection import Connection as WSConnection
    from wsproto.connection import ConnectionType
except ImportError:  # /ws answers 500 without it; everything else still works
    wse = None

READ_CHUNK = 65536
# Timeout while a request is in progress (head or body partly received).
MID_REQUEST_TIMEOUT_S = 30.0
ALLOWED_CONNECTION_TOKENS = {"keep-alive", "close", "upgrade"}

ARGS = None
VERBOSE = False
_stats_lock = threading.Lock()
STATS = {"connections": 0, "requests": 0, "term_opened": 0, "term_open": 0}
# Close codes the /term WebSockets received, in order (None: the stream ended without one).
TERM_CLOSES = []


def log(*a):
    if VERBOSE:
        print("[strict_h11]", *a, file=sys.stderr, flush=True)


def bump(key, by=1):
    with _stats_lock:
        STATS[key] += by
        return STATS[key]


def reason_for(status):
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Status"


class Reject(Exception):
    """Request must be answered with `status` + a body naming the violation, then closed."""

    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status
        self.msg = msg


class Closed(Exception):
    """Peer went away, or the idle/mid-request timeout fired."""


def strict_checks(req):
    """Violations beyond what h11 already refuses. Returns a message or None."""
    target = req.target
    if not target.startswith(b"/"):
        if not (target == b"*" and req.method == b"OPTIONS"):
            return "request-target not in origin-form: %r" % target.decode("latin-1")
    names = [n.decode("latin-1") for n, _ in req.headers]  # lower-cased by h11
    values = [v.decode("latin-1") for _, v in req.headers]
    if names.count("host") > 1:
        return "more than one Host header"
    if names.count("cookie") > 1:
        return "more than one Cookie header line (RFC 6265 section 5.4)"
    for n, v in zip(names, values):
        if n.startswith(":"):
            return "pseudo-header field %r" % n
        if n.startswith("petrel-internal-"):
            return "internal header leaked: %r" % n
        if n == "keep-alive":
            return "hop-by-hop header Keep-Alive"
        if n == "proxy-connection":
            return "hop-by-hop header Proxy-Connection"
        if n == "transfer-encoding" and v.strip().lower() != "chunked":
            return "Transfer-Encoding other than chunked: %r" % v
        if n == "te" and v.strip().lower() != "trailers":
            return "TE other than trailers: %r" % v
    if "transfer-encoding" in names and "content-length" in names:
        return "both Transfer-Encoding and Content-Length"
    conn_tokens = []
    for n, v in zip(names, values):
        if n == "connection":
            conn_tokens += [t.strip().lower() for t in v.split(",") if t.strip()]
    bad = [t for t in conn_tokens if t not in ALLOWED_CONNECTION_TOKENS]
    if bad:
        return "Connection token(s) not allowed: %s" % ", ".join(bad)
    if "upgrade" in names and "upgrade" not in conn_tokens:
        return "Upgrade header without Connection: upgrade"
    return None


def accept_token(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.encode("latin-1") + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest)


def describe_h11_error(exc):
    """h11's message, made readable (it reprs offending lines as bytearray(b'...'))."""
    msg = str(exc)
    m = re.search(r"bytearray\((b'.*'|b\".*\")\)", msg)
    if m:
        try:
            line = ast.literal_eval(m.group(1)).decode("latin-1")
        except Exception:
            line = m.group(1)
        msg = msg[:m.start()] + repr(line) + msg[m.end():]
        if line.startswith(":"):
            msg = "pseudo-header field (name starts with ':'): " + msg
    return msg


class Handler(socketserver.BaseRequestHandler):
    def setup(self):
        self.sock = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h11.Connection(h11.SERVER)
        self.conn_no = bump("connections")
        self.origin_id = ARGS.id.encode()
        self.idle_s = ARGS.idle_close_ms / 1000.0
        self.closed = False

    # ---------------------------------------------------------------- I/O

    def send(self, event):
        data = self.conn.send(event)
        if data:
            self.sock.sendall(data)

    def next_event(self):
        while True:
            ev = self.conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            # Idle = between requests with nothing buffered: the keep-alive timer.
            idle = self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]
            self.sock.settimeout(self.idle_s if idle else MID_REQUEST_TIMEOUT_S)
            try:
                data = self.sock.recv(READ_CHUNK)
            except socket.timeout:
                raise Closed("idle timeout" if idle else "mid-request timeout")
            except OSError as e:
                raise Closed(str(e))
            self.conn.receive_data(data)

    def close_clean(self, linger_s=0.0):
        """shutdown(SHUT_WR) sends our FIN after everything queued; optionally
        wait before close() so the peer can read what we sent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if linger_s:
            time.sleep(linger_s)
        try:
            self.sock.close()
        except OSError:
            pass

    def base_headers(self):
        return [(b"X-Origin-Id", self.origin_id), (b"X-Origin-Conn", str(self.conn_no).encode())]

    def raw_reject(self, status, msg):
        """Answer an error and close, writing bytes ourselves (works whatever
        state h11 is in, including after it refused to parse the head)."""
        body = ("bad request: %s\n" % msg).encode() if status == 400 else ("%d: %s\n" % (status, msg)).encode()
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason_for(status))
        for n, v in self.base_headers() + [
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]:
            head += n + b": " + v + b"\r\n"
        try:
            self.sock.sendall(head + b"\r\n" + body)
        except OSError:
            pass
        # Linger (without reading) so a client still uploading sees the answer
        # before our close() turns unread request bytes into an RST.
        self.close_clean(linger_s=0.2)

    # ------------------------------------------------------------- driver

    def handle(self):
        try:
            while True:
                try:
                    ev = self.next_event()
                except h11.RemoteProtocolError as e:
                    bump("requests")
                    status = e.error_status_hint
                    if status == 501:  # h11 hints 501 for bad Transfer-Encoding; we answer 400
                        status = 400
                    log("h11 refused:", e)
                    self.raw_reject(status, describe_h11_error(e))
                    return
                if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    return
                if not isinstance(ev, h11.Request):
                    return
                bump("requests")
                violation = strict_checks(ev)
                if violation:
                    log("strict refused:", violation)
                    self.raw_reject(400, violation)
                    return
                keep_going = self.dispatch(ev)
                if not keep_going or self.closed:
                    return
                if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                    return
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                else:
                    return
        except Closed as e:
            log("conn", self.conn_no, "closing:", e)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            log("conn", self.conn_no, "peer error:", e)
        except h11.LocalProtocolError as e:
            log("conn", self.conn_no, "local protocol error:", e)
        except Exception as e:  # never let a handler crash loudly
            log("conn", self.conn_no, "handler exception:", repr(e))
        finally:
            self.close_clean()

    # ------------------------------------------------------------ helpers

    def wants_100(self, req):
        return req.http_version == b"1.1" and any(
            n == b"expect" and v.strip().lower() == b"100-continue" for n, v in req.headers
        )

    def read_body(self, req, send_100=True):
        """Read the whole request body. Sends `100 Continue` first if the client
        asked for it and h11 says it is still waiting. Returns (body, sent_100)."""
        sent_100 = False
        if send_100 and self.wants_100(req) and self.conn.they_are_waiting_for_100_continue:
            self.send(h11.InformationalResponse(status_code=100, headers=self.base_headers(), reason=b"Continue"))
            sent_100 = True
        chunks = []
        while True:
            ev = self.next_event()
            if isinstance(ev, h11.Data):
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                return b"".join(chunks), sent_100
            elif isinstance(ev, h11.ConnectionClosed):
                raise Closed("closed mid-body")
            else:
                raise Closed("unexpected event %r" % (ev,))

    def respond(self, req, status, headers=(), body=b""):
        """Fixed-length response. HEAD gets the GET's headers (incl. its
        Content-Length) and no body; 204/304 get neither."""
        hdrs = self.base_headers() + list(headers)
        no_body_status = status in (204, 304)
        if not no_body_status:
            hdrs.append((b"Content-Length", str(len(body)).encode()))
        # One sendall for head + body + end, so a small response is one segment.
        out = self.conn.send(h11.Response(status_code=status, headers=hdrs, reason=reason_for(status)))
        if req.method != b"HEAD" and not no_body_status and body:
            out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(out)
        return True

    def streaming_response(self, req, status, headers):
        """Start a response without Content-Length (h11 picks chunked for 1.1).
        Returns False if this is HEAD (caller must then just end it)."""
        self.send(h11.Response(status_code=status, headers=self.base_headers() + list(headers), reason=reason_for(status)))
        return req.method != b"HEAD"

    # ------------------------------------------------------------ routing

    def replay_answer(self, req):
        """App-directed routing as a Fly app does it (fly-replay): a request carrying
        `X-Test-Replay: <fly-replay value>` is answered with that `fly-replay` header, unless it
        is itself a replay (`fly-replay-src`) or a fallback (`fly-replay-failed`);
        `X-Test-Replay-Loop: 1` replays even replays, to test the proxy's hop limit. Returns the
        answer as a callable, or None."""
        hdrs = {n.lower(): v for n, v in req.headers}
        want = hdrs.get(b"x-test-replay")
        replayed = b"fly-replay-src" in hdrs or b"fly-replay-failed" in hdrs
        if want and (not replayed or hdrs.get(b"x-test-replay-loop") == b"1"):
            return lambda: self.respond(req, 409, [(b"Fly-Replay", want), (b"Content-Type", b"text/plain")],
                                        b"replay me elsewhere\n")
        return None

    def dispatch(self, req):
        split = urllib.parse.urlsplit(req.target.decode("latin-1"))
        path = split.path
        query = urllib.parse.parse_qs(split.query)

        def qint(name, default):
            try:
                return int(query.get(name, [default])[0])
            except ValueError:
                return default

        if req.target == b"*":
            return self.respond(req, 200, [(b"Content-Type", b"text/plain"), (b"X-Target", b"*")], b"asterisk-form\n")
        if path == "/http10":
            # An HTTP/1.0 server's answer; the proxy speaks HTTP/1.1 to its client (RFC 9110 §6.2).
            body = b"from an HTTP/1.0 origin\n"
            self.sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.close_clean(linger_s=0.05)
            return False
        if path == "/early-413":
            return self.ep_early_413(req, 413, b"Payload Too Large")
        if path == "/early-200":
            # The same early answer, but a success: the upload was not wanted.
            return self.ep_early_413(req, 200, b"OK")
        if path == "/ws":
            # A WebSocket handshake can be replayed before it is accepted.
            replay = self.replay_answer(req)
            if replay:
                self.read_body(req)
                return replay()
            return self.ep_ws(req)
        if path == "/term":
            time.sleep(max(0, qint("hs_ms", 0)) / 1000.0)  # a slow handshake
            return self.ep_term(req, max(0, qint("ms", 10)), max(0, qint("burst", 0)), max(1, qint("size", 64)),
                                qint("close_after", -1))
        if path == "/expect":
            return self.ep_expect(req)

        # Everything else reads the full body first, so the connection stays
        # usable for the next request.
        body, _ = self.read_body(req)

        replay = self.replay_answer(req)
        if replay:
            return replay()

        if path == "/headers":
            doc = {
                "method": req.method.decode("latin-1"),
                "target": req.target.decode("latin-1"),
                "http_version": req.http_version.decode("latin-1"),
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers],
                "raw_headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers.raw_items()],
                "body_len": len(body),
            }
            return self.respond(req, 200, [(b"Content-Type", b"application/json")], json.dumps(doc).encode() + b"\n")
        if path == "/echo":
            return self.respond(req, 200, [
                (b"Content-Type", b"application/octet-stream"),
                (b"X-Body-Len", str(len(body)).encode()),
                (b"X-Body-Sha256", hashlib.sha256(body).hexdigest().encode()),
            ], body)
        if path == "/early-hints":
            if req.http_version == b"1.1":  # no 1xx to HTTP/1.0 clients
                self.send(h11.InformationalResponse(status_code=103, reason=b"Early Hints", headers=self.base_headers() + [
                    (b"Link", b"</style.css>; rel=preload; as=style")]))
            return self.respond(req, 200, [(b"Content-Type", b"text/plain"),
                                           (b"Link", b"</style.css>; rel=preload; as=style")], b"ok")
        if path == "/sse":
            n, ms = qint("n", 5), qint("ms", 200)
            if self.streaming_response(req, 200, [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache")]):
                for i in range(n):
                    if i:
                        time.sleep(ms / 1000.0)
                    self.send(h11.Data(data=b"data: %d\n\n" % i))
            self.send(h11.EndOfMessage())
            return True
        if path == "/trailers":
            if self.streaming_response(req, 200, [(b"Content-Type", b"text/plain"), (b"Trailer", b"X-Checksum")]):
                self.send(h11.Data(data=b"hello"))
                if self.conn.their_http_version == b"1.1":
                    trailers = [(b"X-Checksum", b"abc123")]
                    if "bad" in query:
                        # Connection-specific fields have no place in a trailer section; a
                        # proxy drops them (RFC 9110 §7.6.1) rather than fail the message.
                        trailers += [(b"Connection", b"close"), (b"Keep-Alive", b"timeout=5")]
                    self.send(h11.EndOfMessage(headers=trailers))
                    return True
            self.send(h11.EndOfMessage())
            return True
        if path.startswith("/status/"):
            try:
                status = int(path[len("/status/"):])
            except ValueError:
                status = 0
            if not 200 <= status <= 999:
                return self.respond(req, 400, [(b"Content-Type", b"text/plain")], b"bad request: /status/N needs 200 <= N <= 999\n")
            return self.respond(req, status, [(b"Content-Type", b"text/plain")], b"status %d\n" % status)
        if path == "/bytes":
            # n bytes of a repeating pattern, Content-Length framed, written 64 KiB at a time
            # (a download a client may read slowly or not at all).
            n = max(0, qint("n", 1024))
            self.send(h11.Response(status_code=200, reason=b"OK", headers=self.base_headers() + [
                (b"Content-Type", b"application/octet-stream"), (b"Content-Length", str(n).encode())]))
            if req.method != b"HEAD":
                chunk = b"0123456789abcdef" * 4096
                left = n
                while left > 0:
                    self.send(h11.Data(data=chunk[:min(left, len(chunk))]))
                    left -= min(left, len(chunk))
            self.send(h11.EndOfMessage())
            return True
        if path == "/slow":
            time.sleep(max(0, qint("ms", 1000)) / 1000.0)
            return self.respond(req, 200, [(b"Content-Type", b"text/plain")], b"slow ok\n")
        if path == "/stats":
            with _stats_lock:
                doc = {"id": ARGS.id, "connections": STATS["connections"], "requests": STATS["requests"],
                       "term_opened": STATS["term_opened"], "term_open": STATS["term_open"],
                       "term_closes": list(TERM_CLOSES)}
            return self.respond(req, 200, [(b"Content-Type", b"application/json")], json.dumps(doc).encode() + b"\n")
        return self.respond(req, 200, [(b"Content-Type", b"text/plain")], b"hello from %s\n" % self.origin_id)

    # -------------------------------------------------------- special ones

    def ep_early_413(self, req, status, reason):
        # Answer as soon as the head is read, never reading the body.
        # How we close matters: if we close() while request bytes sit unread in
        # our receive buffer, the kernel sends RST instead of FIN, and an RST
        # reaching the client can make it drop our 413 before reading it.
        # So: send the 413 (with Connection: close), shutdown(SHUT_WR) so our
        # FIN follows the response, then keep the socket open ~200 ms WITHOUT
        # reading (the upload is refused, and draining would just let the
        # client finish it). In that window the client reads the 413 (curl
        # notices the early answer and stops sending); only then close().
        body = b"early %d\n" % status
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        for n, v in self.base_headers() + [
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]:
            head += n + b": " + v + b"\r\n"
        try:
            self.sock.sendall(head + b"\r\n" + (b"" if req.method == b"HEAD" else body))
        except OSError:
            pass
        self.close_clean(linger_s=0.2)
        return False

    def ep_expect(self, req):
        sent = False
        if self.wants_100(req) and self.conn.they_are_waiting_for_100_continue:
            self.send(h11.InformationalResponse(status_code=100, headers=self.base_headers(), reason=b"Continue"))
            sent = True
        body, _ = self.read_body(req, send_100=False)
        return self.respond(req, 200, [
            (b"Content-Type", b"text/plain"),
            (b"X-Body-Len", str(len(body)).encode()),
            (b"X-Sent-100", b"1" if sent else b"0"),
        ], b"expect ok\n")

    def ep_ws(self, req):
        ws = self.ws_handshake(req)
        if ws is False:
            return False
        self.sock.settimeout(None)
        pending = {"text": [], "bytes": []}
        eof = False
        while True:
            out = b""
            done = False
            for ev in ws.events():
                if isinstance(ev, wse.TextMessage):
                    pending["text"].append(ev.data)
                    if ev.message_finished:
                        out += ws.send(wse.TextMessage(data="".join(pending["text"])))
                        pending["text"] = []
                elif isinstance(ev, wse.BytesMessage):
                    pending["bytes"].append(bytes(ev.data))
                    if ev.message_finished:
                        out += ws.send(wse.BytesMessage(data=b"".join(pending["bytes"])))
                        pending["bytes"] = []
                elif isinstance(ev, wse.Ping):
                    out += ws.send(ev.response())
                elif isinstance(ev, wse.CloseConnection):
                    try:
                        out += ws.send(ev.response())
                    except Exception:
                        pass
                    done = True
            if out:
                self.sock.sendall(out)
            if done or eof:
                self.close_clean()
                return False
            try:
                data = self.sock.recv(READ_CHUNK)
            except OSError:
                return False
            if not data:
                eof = True
                ws.receive_data(None)
            else:
                ws.receive_data(data)

    def ep_term(self, req, ms, burst, size, close_after=-1):
        # A terminal-like WebSocket: `burst` lines of `size` bytes at once, then a numbered line
        # every `ms` ms (0: none) -- "line N" -- and "input K: TEXT" for the K-th client
        # message; with close_after=N it closes with 4000 "bye" once N lines are out (the shell
        # exits). Counts opened/open sockets and the close code each one got, for /stats.
        ws = self.ws_handshake(req)
        if ws is False:
            return False
        bump("term_opened")
        bump("term_open")
        code = None
        n = 0
        inputs = 0
        try:
            out = b""
            for _ in range(burst):
                line = ("line %d " % n).encode()
                out += ws.send(wse.TextMessage(data=(line + b"x" * max(0, size - len(line))).decode()))
                n += 1
            if out:
                self.sock.sendall(out)
            next_at = time.monotonic() + ms / 1000.0
            while True:
                wait = (next_at - time.monotonic()) if ms > 0 else None
                if wait is not None and wait <= 0:
                    if n == close_after:
                        self.sock.sendall(ws.send(wse.CloseConnection(code=4000, reason="bye")))
                        ms = 0  # then only wait for the close answer
                        continue
                    self.sock.sendall(ws.send(wse.TextMessage(data="line %d" % n)))
                    n += 1
                    next_at += ms / 1000.0
                    continue
                self.sock.settimeout(wait)
                try:
                    data = self.sock.recv(READ_CHUNK)
                except socket.timeout:
                    continue
                except OSError:
                    return False
                ws.receive_data(data if data else None)
                out = b""
                done = not data
                for ev in ws.events():
                    if isinstance(ev, wse.TextMessage):
                        inputs += 1
                        out += ws.send(wse.TextMessage(data="input %d: %s" % (inputs, ev.data)))
                    elif isinstance(ev, wse.Ping):
                        out += ws.send(ev.response())
                    elif isinstance(ev, wse.CloseConnection):
                        code = ev.code
                        try:
                            out += ws.send(ev.response())
                        except Exception:
                            pass
                        done = True
                if out:
                    self.sock.sendall(out)
                if done:
                    self.close_clean()
                    return False
        finally:
            with _stats_lock:
                STATS["term_open"] -= 1
                TERM_CLOSES.append(code)

    def ws_handshake(self, req):
        # Checks the handshake strictly, answers 101, returns the wsproto connection (or False
        # after answering 400/500).
        hdr = {}
        for n, v in req.headers:
            hdr.setdefault(n.decode("latin-1"), []).append(v.decode("latin-1"))

        def tokens(name):
            return [t.strip().lower() for v in hdr.get(name, []) for t in v.split(",") if t.strip()]

        problem = None
        key = hdr.get("sec-websocket-key", [])
        if req.method != b"GET":
            problem = "WebSocket handshake must be GET"
        elif req.http_version != b"1.1":
            problem = "WebSocket handshake must be HTTP/1.1"
        elif tokens("upgrade") != ["websocket"]:
            problem = "Upgrade must be websocket"
        elif "upgrade" not in tokens("connection"):
            problem = "Connection must contain upgrade"
        elif len(key) != 1:
            problem = "exactly one Sec-WebSocket-Key required"
        elif hdr.get("sec-websocket-version", []) != ["13"]:
            problem = "Sec-WebSocket-Version must be 13"
        else:
            try:
                if len(base64.b64decode(key[0].strip(), validate=True)) != 16:
                    problem = "Sec-WebSocket-Key must be base64 of 16 bytes"
            except Exception:
                problem = "Sec-WebSocket-Key is not base64"
        if problem is None and wse is None:
            body, _ = self.read_body(req)
            self.respond(req, 500, [(b"Content-Type", b"text/plain")], b"wsproto not installed\n")
            return False
        if problem:
            # Read the (normally empty) body so h11 lets us answer normally;
            # answering a regular response also declines any upgrade.
            self.read_body(req)
            self.respond(req, 400, [(b"Content-Type", b"text/plain"), (b"Sec-WebSocket-Version", b"13"),
                                    (b"Connection", b"close")], ("bad request: %s\n" % problem).encode())
            return False

        # Consume the request to the point where h11 pauses for the switch.
        while True:
            ev = self.next_event()
            if ev is h11.PAUSED:
                break
            if isinstance(ev, (h11.Data, h11.EndOfMessage)):
                continue
            raise Closed("unexpected event before upgrade %r" % (ev,))
        self.send(h11.InformationalResponse(status_code=101, reason=b"Switching Protocols", headers=self.base_headers() + [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_token(key[0].strip())),
        ]))
        trailing, closed = self.conn.trailing_data
        ws = WSConnection(ConnectionType.SERVER, trailing_data=bytes(trailing))
        return ws


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    global ARGS, VERBOSE
    p = argparse.ArgumentParser(description="strict h11 test origin")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--id", default="strict")
    p.add_argument("--idle-close-ms", type=int, default=5000)
    p.add_argument("--verbose", action="store_true")
    ARGS = p.parse_args()
    VERBOSE = ARGS.verbose
    try:  # a thousand held WebSockets need more descriptors than a default soft limit
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    host, _, port = ARGS.listen.rpartition(":")
    srv = Server((host, int(port)), Handler)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    h, prt = srv.server_address[:2]
    sys.stdout.write("origin listening on %s:%d\n" % (h, prt))
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.5)
    except SystemExit:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
