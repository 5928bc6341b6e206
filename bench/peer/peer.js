#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// The peer of issue #16's fleet benchmark: N MQTT.js (npm `mqtt` v5) clients
// in ONE Node process (one event loop), each with its own client certificate,
// each doing what an espfleet device does to be online:
//
//   CONNECT      MQTT 3.1.1, client id = CN, clean session, keepalive 60,
//                will = retained QoS 1 {"state":"offline","version":"1.0.0"}
//                on /esp/<id>/status
//   on CONNACK   SUBSCRIBE /esp/update/#, /esp/restart, /esp/<id>/update/#,
//                /esp/<id>/restart (QoS 1), and PUBLISH retained QoS 1
//                {"state":"online","version":"1.0.0"} to /esp/<id>/status
//   online       when the SUBACK and the status PUBACK are both in
//
// TLS: the CA is verified (rejectUnauthorized) and so is the broker's host
// name, against --servername (the test PKI's broker cert is for localhost),
// while the TCP connection goes to --host.
//
// Connects are offered at --rate clients/s through a token bucket (100 ms of
// burst), like espfleetd's ramp plus its connect_rate_max: a failed or timed
// out attempt is retried after --retry-delay and its retry takes a token too.
// 0 = unthrottled.
//
//   node peer.js --certs DIR [--n N] [--rate R] [--hold S] [--timeout S]
//                [--host H] [--port P] [--servername NAME] [--ca FILE]
//                [--attempt-timeout S] [--retry-delay MS] [--keepalive S]
//                [--progress S]
//
//   --certs DIR        made by bench-certs: certs.conf, ca.crt, key-KKK.pem,
//                      peer-NNNNNN.crt (client i uses key i mod K)
//   --n N              clients (default: certs.conf's count; must be <= it)
//   --rate R           connects offered per second (default 200; 0 = all at once)
//   --hold S           seconds to stay connected once all are online, before RSS
//                      is read (default 10)
//   --timeout S        bound on the connect phase (default 300): whoever is not
//                      online by then counts as not online
//   --host/--port      broker (default 127.0.0.1:8883)
//   --servername NAME  TLS SNI and the name checked in the broker cert (default localhost)
//   --ca FILE          CA to verify the broker with (default DIR/ca.crt)
//   --attempt-timeout  seconds from an attempt's start to online (default 30)
//   --retry-delay MS   before a failed client is offered again (default 1000)
//   --progress S       progress line on stderr every S seconds (default 5; 0 = none)
//
// Node cannot raise its own fd limit: the caller must `ulimit -n` (run-peer.sh
// does); peer.js refuses an N that does not fit below the soft limit.
//
// Result, one line on stdout at the end:
//   peer: n=N online=… secs=… rate=… cpu_ms_per_client=… rss_kib_per_client=…
//         failures=… timeouts=… held=… hold_s=… rss_base_kib=… cpu_hold_ms=…
//         loop_delay_p99_ms=… offered_rate=… attempts=… heap_used_mib=…
//         heap_limit_mib=…
//   online              clients online at the end of the connect phase
//   secs                start of the first connect -> the N-th online (or the
//                       timeout); rate = online / secs
//   cpu_ms_per_client   process.cpuUsage() user+system over the connect phase,
//                       per online client
//   rss_kib_per_client  process.memoryUsage().rss after the hold, per client
//                       still online (whole process, like fleet.sh does for
//                       espfleetd); rss_base_kib is the RSS before the first connect
//   failures            failed attempts (errors, closes, timeouts); timeouts
//                       is the part that hit --attempt-timeout
//   held                clients still connected after the hold
//   loop_delay_p99_ms   event-loop delay p99 over the connect phase
//   heap_used_mib       V8 heap in use after the hold, next to V8's limit
//                       (heap_limit_mib; node --max-old-space-size raises it)
// Exit status: 0 when all N came online, 1 when not, 2 on bad usage.

'use strict';

const fs = require('fs');
const path = require('path');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const heapLimit = require('v8').getHeapStatistics().heap_size_limit;
const mqtt = require('mqtt');
const { parseOptions } = require('./args');

const VERSION = '1.0.0';
const ONLINE = JSON.stringify({ state: 'online', version: VERSION });
const OFFLINE = JSON.stringify({ state: 'offline', version: VERSION });
// fds besides the clients' sockets: stdio, the event loop, libuv's pool
const FD_RESERVE = 64;

function die(msg, code = 2) {
  process.stderr.write(`peer: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = {
    certs: null, n: null, rate: 200, hold: 10, timeout: 300,
    host: '127.0.0.1', port: 8883, servername: 'localhost', ca: null,
    attemptTimeout: 30, retryDelay: 1000, keepalive: 60, progress: 5,
  };
  const num = {
    '--n': 'n', '--rate': 'rate', '--hold': 'hold', '--timeout': 'timeout', '--port': 'port',
    '--attempt-timeout': 'attemptTimeout', '--retry-delay': 'retryDelay', '--keepalive': 'keepalive',
    '--progress': 'progress',
  };
  const str = { '--certs': 'certs', '--host': 'host', '--servername': 'servername', '--ca': 'ca' };
  parseOptions(argv, o, num, str, 'usage: peer.js --certs DIR [--n N] [--rate R] [--hold S] [--timeout S] ' +
        '[--host H] [--port P] [--servername NAME] [--ca FILE] [--attempt-timeout S] ' +
        '[--retry-delay MS] [--keepalive S] [--progress S]\n', die);

  if (!o.certs)
    die('--certs DIR is required');
  if (o.n !== null && (!Number.isInteger(o.n) || o.n < 1))
    die('--n must be a positive integer');
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)
    die('--port must be 1…65535');
  if (o.keepalive > 65535 || !Number.isInteger(o.keepalive))
    die('--keepalive must be an integer 0…65535');
  if (o.attemptTimeout <= 0)
    die('--attempt-timeout must be > 0');
  return o;
}

// certs.conf: key=value lines written last by bench-certs
function readCertsConf(dir) {
  let text;
  try {
    text = fs.readFileSync(path.join(dir, 'certs.conf'), 'utf8');
  } catch (e) {
    die(`${dir}: no certs.conf (${e.code}): make it with bench-certs`);
  }
  const c = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z]+)=(.*)$/.exec(line);
    if (m)
      c[m[1]] = m[2];
  }
  const count = Number(c.count), keys = Number(c.keys), digits = Number(c.digits);
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(keys) || keys < 1 ||
      !Number.isInteger(digits) || digits < 1 || !c.prefix)
    die(`${dir}/certs.conf: needs count, keys, prefix and digits`);
  return { count, keys, prefix: c.prefix, digits };
}

function softFdLimit() {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

const opt = parseArgs(process.argv.slice(2));
const conf = readCertsConf(opt.certs);
const N = opt.n ?? conf.count;
if (N > conf.count)
  die(`--n ${N}: ${opt.certs} only has ${conf.count} certificates (bench-certs --count)`);
const fdLimit = softFdLimit();
if (N + FD_RESERVE > fdLimit)
  die(`${N} clients need ~${N + FD_RESERVE} fds, the soft limit is ${fdLimit}: raise it with ulimit -n`);

const ca = fs.readFileSync(opt.ca ?? path.join(opt.certs, 'ca.crt'));
const keys = [];
for (let k = 0; k < conf.keys; k++)
  keys.push(fs.readFileSync(path.join(opt.certs, `key-${String(k).padStart(3, '0')}.pem`)));

// Client state: 0 waiting, 1 connecting, 2 online, 3 dropped (closed after online)
const S_WAIT = 0, S_CONNECTING = 1, S_ONLINE = 2, S_DROPPED = 3;
const clients = new Array(N);
for (let i = 0; i < N; i++) {
  const id = conf.prefix + String(i).padStart(conf.digits, '0');
  clients[i] = { i, id, state: S_WAIT, attempt: 0, mqtt: null, timer: null, suback: false, puback: false,
    lastError: null };
}

const st = { attempts: 0, failures: 0, timeouts: 0, online: 0, dropped: 0, connected: 0 };
const errors = new Map(); // reason -> count, for the stderr summary
let ready = [];           // indices to offer, in order
let retryQueue = [];      // { i, at }
let phase = 'connect';    // connect -> hold -> done
let t0, tEnd = null, cpu0, cpuConnect = null;

function noteError(msg) {
  errors.set(msg, (errors.get(msg) || 0) + 1);
}

function attemptFailed(c, why) {
  if (c.state !== S_CONNECTING)
    return;
  clearTimeout(c.timer);
  c.timer = null;
  st.failures++;
  if (why === 'timeout')
    st.timeouts++;
  noteError(c.lastError ? `${why} (${c.lastError})` : why);
  const m = c.mqtt;
  c.mqtt = null;
  c.attempt++;
  c.state = S_WAIT;
  if (m)
    m.end(true);
  if (phase === 'connect')
    retryQueue.push({ i: c.i, at: performance.now() + opt.retryDelay });
}

function maybeOnline(c) {
  if (c.state !== S_CONNECTING || !c.suback || !c.puback)
    return;
  clearTimeout(c.timer);
  c.timer = null;
  c.state = S_ONLINE;
  st.online++;
  if (st.online === N)
    endConnectPhase();
}

function startClient(c) {
  const attempt = c.attempt;
  const status = `/esp/${c.id}/status`;
  let cert;
  try {
    cert = fs.readFileSync(path.join(opt.certs, `${c.id}.crt`));
  } catch (e) {
    die(`${c.id}.crt: ${e.message}`, 1);
  }
  st.attempts++;
  c.state = S_CONNECTING;
  c.suback = c.puback = false;
  c.lastError = null;
  c.timer = setTimeout(() => attemptFailed(c, 'timeout'), opt.attemptTimeout * 1000);
  const m = mqtt.connect({
    protocol: 'mqtts',
    host: opt.host,
    port: opt.port,
    servername: opt.servername,
    ca,
    cert,
    key: keys[c.i % conf.keys],
    rejectUnauthorized: true,
    protocolVersion: 4,
    clientId: c.id,
    clean: true,
    keepalive: opt.keepalive,
    reconnectPeriod: 0,
    connectTimeout: opt.attemptTimeout * 1000,
    will: { topic: status, payload: OFFLINE, qos: 1, retain: true },
  });
  c.mqtt = m;
  const current = () => c.mqtt === m && c.attempt === attempt;
  m.on('connect', () => {
    if (!current())
      return;
    st.connected++;
    m.subscribe(['/esp/update/#', '/esp/restart', `/esp/${c.id}/update/#`, `/esp/${c.id}/restart`],
      { qos: 1 }, (err, granted) => {
        if (!current())
          return;
        if (err)
          return attemptFailed(c, `subscribe: ${err.message}`);
        if (granted.some((g) => g.qos > 2))
          return attemptFailed(c, 'subscribe refused');
        c.suback = true;
        maybeOnline(c);
      });
    m.publish(status, ONLINE, { qos: 1, retain: true }, (err) => {
      if (!current())
        return;
      if (err)
        return attemptFailed(c, `publish: ${err.message}`);
      c.puback = true;
      maybeOnline(c);
    });
  });
  // MQTT.js may report one failure more than once; it is counted once, when
  // the attempt fails or the client drops, with the last error named.
  m.on('error', (err) => {
    if (current())
      c.lastError = err.code || err.message;
  });
  m.on('close', () => {
    if (!current())
      return;
    if (c.state === S_CONNECTING) {
      attemptFailed(c, 'closed before online');
    } else if (c.state === S_ONLINE) {
      c.state = S_DROPPED;
      st.online--;
      st.dropped++;
      noteError(c.lastError ? `closed after online (${c.lastError})` : 'closed after online');
    }
  });
  // Commands are not acted on: the peer measures connecting and staying online.
  m.on('message', () => {});
}

// Token bucket: `rate` per second, 100 ms of burst (at least one token).
const burst = Math.max(1, opt.rate / 10);
let tokens = burst, lastRefill;

function pump() {
  if (phase !== 'connect')
    return;
  const now = performance.now();
  if (retryQueue.length && retryQueue[0].at <= now) {
    const due = retryQueue.filter((r) => r.at <= now);
    retryQueue = retryQueue.filter((r) => r.at > now);
    for (const r of due)
      ready.push(r.i);
  }
  if (opt.rate > 0) {
    tokens = Math.min(burst, tokens + (now - lastRefill) * opt.rate / 1000);
    lastRefill = now;
  }
  let started = 0;
  while (ready.length && (opt.rate === 0 || tokens >= 1)) {
    if (opt.rate > 0)
      tokens -= 1;
    startClient(clients[ready.shift()]);
    // yield to the loop now and then, so handshakes in flight keep moving
    if (++started >= 200)
      break;
  }
  if (now - t0 >= opt.timeout * 1000)
    endConnectPhase();
}

let pumpTimer, progressTimer;
const loopDelay = monitorEventLoopDelay({ resolution: 10 });

function progress() {
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  process.stderr.write(`peer: t=${s}s attempts=${st.attempts} connacks=${st.connected} online=${st.online}/${N} ` +
    `failures=${st.failures} timeouts=${st.timeouts}\n`);
}

function endConnectPhase() {
  if (phase !== 'connect')
    return;
  phase = 'hold';
  tEnd = performance.now();
  onlineAtEnd = st.online;
  cpuConnect = process.cpuUsage(cpu0);
  loopDelay.disable();
  clearInterval(pumpTimer);
  retryQueue = [];
  ready = [];
  // whoever is still connecting is not online: stop them
  for (const c of clients) {
    if (c.state === S_CONNECTING) {
      clearTimeout(c.timer);
      c.state = S_WAIT;
      const m = c.mqtt;
      c.mqtt = null;
      if (m)
        m.end(true);
    }
  }
  process.stderr.write(`peer: ${st.online}/${N} online after ${((tEnd - t0) / 1000).toFixed(1)} s, ` +
    `holding ${opt.hold} s\n`);
  setTimeout(finish, opt.hold * 1000);
}

const rssBase = process.memoryUsage().rss;
let onlineAtEnd = 0;

function finish() {
  if (phase === 'done')
    return;
  phase = 'done';
  if (progressTimer)
    clearInterval(progressTimer);
  const secs = (tEnd - t0) / 1000;
  const held = clients.filter((c) => c.state === S_ONLINE && c.mqtt && c.mqtt.connected).length;
  const mem = process.memoryUsage();
  const rss = mem.rss;
  const cpuAll = process.cpuUsage(cpu0);
  const cpuConnMs = (cpuConnect.user + cpuConnect.system) / 1000;
  const cpuHoldMs = (cpuAll.user + cpuAll.system) / 1000 - cpuConnMs;
  const f = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : '0');
  for (const [msg, n] of errors)
    process.stderr.write(`peer: ${n}× ${msg}\n`);
  process.stdout.write(`peer: n=${N} online=${onlineAtEnd} secs=${f(secs, 2)} rate=${f(onlineAtEnd / secs, 1)} ` +
    `cpu_ms_per_client=${f(onlineAtEnd ? cpuConnMs / onlineAtEnd : 0, 3)} ` +
    `rss_kib_per_client=${f(held ? rss / 1024 / held : 0, 1)} failures=${st.failures} timeouts=${st.timeouts} ` +
    `held=${held} hold_s=${opt.hold} rss_base_kib=${Math.round(rssBase / 1024)} cpu_hold_ms=${f(cpuHoldMs, 0)} ` +
    `loop_delay_p99_ms=${f(loopDelay.percentile(99) / 1e6, 1)} offered_rate=${opt.rate} attempts=${st.attempts} ` +
    `heap_used_mib=${f(mem.heapUsed / 2 ** 20, 1)} heap_limit_mib=${f(heapLimit / 2 ** 20, 0)}\n`);
  // Clean DISCONNECTs (no will), bounded: exit whatever the broker does.
  let open = 0;
  const exitCode = onlineAtEnd === N ? 0 : 1;
  const done = () => {
    if (--open <= 0)
      process.exit(exitCode);
  };
  for (const c of clients) {
    if (c.mqtt) {
      open++;
      c.mqtt.end(false, {}, done);
      c.mqtt = null;
    }
  }
  setTimeout(() => process.exit(exitCode), 10000).unref();
  if (open === 0)
    process.exit(exitCode);
}

function interrupted(sig) {
  process.stderr.write(`peer: ${sig}, stopping\n`);
  if (phase === 'connect')
    endConnectPhase();
  if (phase === 'hold')
    finish();
  else
    process.exit(1);
}
process.on('SIGINT', () => interrupted('SIGINT'));
process.on('SIGTERM', () => interrupted('SIGTERM'));

for (let i = 0; i < N; i++)
  ready.push(i);
process.stderr.write(`peer: ${N} clients to ${opt.host}:${opt.port} (servername ${opt.servername}), ` +
  `${opt.rate > 0 ? opt.rate + '/s' : 'unthrottled'}, timeout ${opt.timeout} s, hold ${opt.hold} s\n`);
t0 = lastRefill = performance.now();
cpu0 = process.cpuUsage();
loopDelay.enable();
pumpTimer = setInterval(pump, 5);
if (opt.progress > 0)
  progressTimer = setInterval(progress, opt.progress * 1000);
pump();
