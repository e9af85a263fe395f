#!/usr/bin/env node
// Test origin for petrel's conformance suite on Node's `http` module, i.e. the
// strict llhttp parser (insecureHTTPParser off). On top of llhttp it refuses
// (400) request-targets that are not origin-form, HTTP/1.1 without Host, more
// than one Host and more than one Cookie header line.
// Idle keep-alive close: Node 20 advertises `Keep-Alive: timeout=floor(N/1000)`
// but closes an idle socket only after N + 1000 ms (its internal
// HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER); that is real Node behaviour, kept.
//
//   node node_origin.js --listen 127.0.0.1:0 --id NAME [--keep-alive-ms N] [--verbose]
//
// After binding it prints exactly one line to stdout,
//   origin listening on 127.0.0.1:PORT
// and nothing else goes to stdout; stderr stays quiet unless --verbose.
// Endpoints: /headers /echo /early-hints /stats /slow?ms=N, default hello.
'use strict';

const http = require('http');
const crypto = require('crypto');

function parseArgs(argv) {
  const out = { listen: '127.0.0.1:0', id: 'node', keepAliveMs: 5000, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) { console.error(`missing value for ${a}`); process.exit(2); }
      return argv[++i];
    };
    if (a === '--listen') out.listen = next();
    else if (a === '--id') out.id = next();
    else if (a === '--keep-alive-ms') out.keepAliveMs = parseInt(next(), 10);
    else if (a === '--verbose') out.verbose = true;
    else { console.error(`unknown argument ${a}`); process.exit(2); }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const log = (...m) => { if (args.verbose) console.error('[node_origin]', ...m); };
const stats = { connections: 0, requests: 0 };

function send(res, status, headers, body) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body || '');
  res.writeHead(status, Object.assign({ 'Content-Length': buf.length }, headers));
  res.end(buf); // Node sends no body for HEAD (headers as for GET)
}

function reject(req, res, msg) {
  log('refused:', msg);
  const body = `bad request: ${msg}\n`;
  res.shouldKeepAlive = false;
  send(res, 400, { 'Content-Type': 'text/plain', Connection: 'close' }, body);
  req.resume();
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const server = http.createServer({ requireHostHeader: false, insecureHTTPParser: false }, async (req, res) => {
  stats.requests++;
  res.setHeader('X-Origin-Id', args.id);

  // Strict checks on top of llhttp.
  const target = req.url;
  if (!(target.startsWith('/') || (target === '*' && req.method === 'OPTIONS'))) {
    return reject(req, res, `request-target not in origin-form: '${target}'`);
  }
  let cookieLines = 0;
  let hostLines = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const n = req.rawHeaders[i].toLowerCase();
    if (n === 'cookie') cookieLines++;
    if (n === 'host') hostLines++;
  }
  // (requireHostHeader is off so that this 400 carries X-Origin-Id and names the problem.)
  if (hostLines === 0 && req.httpVersion === '1.1') {
    return reject(req, res, 'Missing mandatory Host: header');
  }
  if (hostLines > 1) {
    return reject(req, res, 'more than one Host header');
  }
  if (cookieLines > 1) {
    return reject(req, res, 'more than one Cookie header line (RFC 6265 section 5.4)');
  }

  const url = new URL(target === '*' ? '/' : target, 'http://origin.invalid');
  const path = url.pathname;
  let body;
  try {
    body = await readBody(req);
  } catch (e) {
    log('body error', e.message);
    return;
  }

  if (path === '/headers') {
    const headers = [];
    const raw = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
      raw.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    }
    const doc = {
      method: req.method,
      target,
      http_version: req.httpVersion,
      headers,
      raw_headers: raw,
      body_len: body.length,
      httpVersion: req.httpVersion,
      url: req.url,
    };
    return send(res, 200, { 'Content-Type': 'application/json' }, JSON.stringify(doc) + '\n');
  }
  if (path === '/echo') {
    return send(res, 200, {
      'Content-Type': 'application/octet-stream',
      'X-Body-Len': String(body.length),
      'X-Body-Sha256': crypto.createHash('sha256').update(body).digest('hex'),
    }, body);
  }
  if (path === '/early-hints') {
    if (req.httpVersion === '1.1') {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style', 'x-origin-id': args.id });
    }
    return send(res, 200, { 'Content-Type': 'text/plain', Link: '</style.css>; rel=preload; as=style' }, 'ok');
  }
  if (path === '/stats') {
    const doc = { id: args.id, connections: stats.connections, requests: stats.requests };
    return send(res, 200, { 'Content-Type': 'application/json' }, JSON.stringify(doc) + '\n');
  }
  if (path === '/slow') {
    const ms = Math.max(0, parseInt(url.searchParams.get('ms') || '1000', 10) || 0);
    setTimeout(() => send(res, 200, { 'Content-Type': 'text/plain' }, 'slow ok\n'), ms);
    return;
  }
  return send(res, 200, { 'Content-Type': 'text/plain' }, `hello from ${args.id}\n`);
});

server.keepAliveTimeout = args.keepAliveMs;
// headersTimeout must exceed keepAliveTimeout or Node may cut idle sockets early.
server.headersTimeout = Math.max(60000, args.keepAliveMs + 1000);
server.on('connection', (sock) => {
  stats.connections++;
  sock.setNoDelay(true);
});
server.on('clientError', (err, sock) => {
  // llhttp refused the request (bad head, no Host, ...). Count it and answer 400.
  stats.requests++;
  log('clientError', err.code, err.message);
  if (!sock.writable || err.code === 'ECONNRESET') { sock.destroy(); return; }
  const tooBig = err.code === 'HPE_HEADER_OVERFLOW';
  const body = `bad request: ${err.code || 'parse error'}${err.reason ? ': ' + err.reason : ''}\n`;
  sock.end(`HTTP/1.1 ${tooBig ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nX-Origin-Id: ${args.id}\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
});

const idx = args.listen.lastIndexOf(':');
const host = args.listen.slice(0, idx);
const port = parseInt(args.listen.slice(idx + 1), 10);
server.listen(port, host, () => {
  const a = server.address();
  process.stdout.write(`origin listening on ${a.address}:${a.port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
