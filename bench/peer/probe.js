#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// Broadcast-command latency probe for issue #16: "a broadcast command to
// 19,500 online devices is accepted by all of them, with p99 <= 2 s from
// publish to each device's log line".
//
// One MQTT.js connection with the operator certificate (mTLS, CA and broker
// host name verified): SUBSCRIBE to the log topic pattern and wait for the
// SUBACK, PUBLISH the command once, then record, for each distinct device id,
// the time from just before the PUBLISH to its first log line that matches
// --match; until --n devices answered or --timeout.
//
//   node probe.js --pki PKI --n N [--port P] [--host H] [--servername NAME]
//                 [--topic T] [--payload P] [--match REGEX] [--log-topic PATTERN]
//                 [--ids REGEX] [--timeout S] [--wait-online S] [--qos Q]
//
//   --pki PKI          an `espfleet pki init` dir: ca.crt, operator.crt, operator.key
//                      (or --ca/--cert/--key one by one)
//   --n N              devices expected to answer
//   --topic T          command topic (default /esp/update/interval)
//   --payload P        command payload (default 600)
//   --match REGEX      what an answer looks like (JavaScript RegExp); default, for
//                      the default topic: "secure_esp: update/interval: saved <payload> s"
//                      (espfleet's "I (…) secure_esp: update/interval: saved 600 s,
//                      effective after restart"); required with any other --topic
//   --log-topic PAT    subscription (default /esp/+/log); the device id is the topic
//                      level where PAT has its '+'
//   --ids REGEX        count only device ids matching REGEX (default: all)
//   --timeout S        seconds to wait for answers after the PUBLISH (default 30)
//   --wait-online S    before publishing, wait up to S seconds until N ids (of
//                      --ids) have a retained/live {"state":"online"} on
//                      /esp/+/status (default 0: publish right after the SUBACK)
//   --qos Q            QoS of the command PUBLISH (default 1); the log subscription
//                      is QoS 0, so the broker need not wait for our PUBACKs
//   --host/--port      broker (default 127.0.0.1:8883); --servername (default
//                      localhost) is the SNI and the name checked in the broker cert
//
// Result, one line on stdout:
//   probe: n=N answered=A missing=M p50_ms=… p90_ms=… p99_ms=… max_ms=…
//          puback_ms=… timeout_s=… topic=T
// Percentiles are nearest-rank over all N expected devices: a device that did
// not answer counts as slower than any answer, and a percentile that falls on
// one prints "inf". max_ms is the slowest answer received. The receive time is
// taken when MQTT.js hands the message to the probe, so it includes the
// broker's and the probe's own queueing.
// A broker's per-client queue limit (mosquitto max_queued_messages, default
// 1000 for QoS 0 messages still to be written to a client) can drop answers
// to a slow reader at large N; the broker's log then says so.
// Exit status: 0 when all N answered, 1 when not, 2 on bad usage.

'use strict';

const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');
const mqtt = require('mqtt');
const { parseOptions } = require('./args');

function die(msg, code = 2) {
  process.stderr.write(`probe: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = {
    pki: null, ca: null, cert: null, key: null, n: null, host: '127.0.0.1', port: 8883,
    servername: 'localhost', topic: '/esp/update/interval', payload: '600', match: null,
    logTopic: '/esp/+/log', ids: null, timeout: 30, waitOnline: 0, qos: 1,
  };
  const num = { '--n': 'n', '--port': 'port', '--timeout': 'timeout', '--wait-online': 'waitOnline', '--qos': 'qos' };
  const str = {
    '--pki': 'pki', '--ca': 'ca', '--cert': 'cert', '--key': 'key', '--host': 'host',
    '--servername': 'servername', '--topic': 'topic', '--payload': 'payload', '--match': 'match',
    '--log-topic': 'logTopic', '--ids': 'ids',
  };
  parseOptions(argv, o, num, str, 'usage: probe.js --pki PKI --n N [--port P] [--host H] [--servername NAME] ' +
        '[--topic T] [--payload P] [--match REGEX] [--log-topic PATTERN] [--ids REGEX] ' +
        '[--timeout S] [--wait-online S] [--qos Q]\n', die);

  if (!Number.isInteger(o.n) || o.n < 1)
    die('--n N (a positive integer) is required');
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)
    die('--port must be 1…65535');
  if (![0, 1, 2].includes(o.qos))
    die('--qos must be 0, 1 or 2');
  if (o.pki) {
    o.ca ??= path.join(o.pki, 'ca.crt');
    o.cert ??= path.join(o.pki, 'operator.crt');
    o.key ??= path.join(o.pki, 'operator.key');
  }
  if (!o.ca || !o.cert || !o.key)
    die('--pki PKI (or all of --ca, --cert, --key) is required');
  if (o.match === null) {
    if (o.topic !== '/esp/update/interval')
      die('--match REGEX is required with a --topic other than /esp/update/interval');
    o.match = `secure_esp: update/interval: saved ${o.payload.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} s`;
  }
  return o;
}

const opt = parseArgs(process.argv.slice(2));
let match, idFilter;
try {
  match = new RegExp(opt.match);
  idFilter = opt.ids ? new RegExp(opt.ids) : null;
} catch (e) {
  die(e.message);
}
const idLevel = opt.logTopic.split('/').indexOf('+');
if (idLevel < 0)
  die(`--log-topic '${opt.logTopic}' has no '+' level for the device id`);
const N = opt.n;

const answers = new Map(); // id -> ms from publish
const online = new Set();  // ids with an online status, for --wait-online
let tPub = null, pubackMs = null, phase = 'subscribing', deadline = null;

const client = mqtt.connect({
  protocol: 'mqtts',
  host: opt.host,
  port: opt.port,
  servername: opt.servername,
  ca: fs.readFileSync(opt.ca),
  cert: fs.readFileSync(opt.cert),
  key: fs.readFileSync(opt.key),
  rejectUnauthorized: true,
  protocolVersion: 4,
  clientId: `probe-${process.pid}`,
  clean: true,
  keepalive: 60,
  reconnectPeriod: 0,
  connectTimeout: 10000,
});

function pct(sorted, p) {
  // nearest rank over N; ranks past the answers are the devices that did not answer
  const rank = Math.max(1, Math.ceil((p / 100) * N));
  return rank <= sorted.length ? sorted[rank - 1].toFixed(1) : 'inf';
}

function finish() {
  if (phase === 'done')
    return;
  const published = phase === 'waiting';
  phase = 'done';
  clearTimeout(deadline);
  const lat = [...answers.values()].sort((a, b) => a - b);
  const max = lat.length ? lat[lat.length - 1].toFixed(1) : 'inf';
  if (!published)
    process.stderr.write('probe: stopped before the command was published\n');
  process.stdout.write(`probe: n=${N} answered=${lat.length} missing=${N - lat.length} ` +
    `p50_ms=${pct(lat, 50)} p90_ms=${pct(lat, 90)} p99_ms=${pct(lat, 99)} max_ms=${max} ` +
    `puback_ms=${pubackMs === null ? 'none' : pubackMs.toFixed(1)} timeout_s=${opt.timeout} topic=${opt.topic}\n`);
  const code = lat.length >= N ? 0 : 1;
  client.end(false, {}, () => process.exit(code));
  setTimeout(() => process.exit(code), 5000).unref();
}

function publish() {
  if (phase !== 'subscribed')
    return;
  phase = 'waiting';
  process.stderr.write(`probe: publishing '${opt.payload}' to ${opt.topic} (QoS ${opt.qos}), ` +
    `waiting up to ${opt.timeout} s for ${N} answers matching /${opt.match}/\n`);
  deadline = setTimeout(() => {
    process.stderr.write(`probe: timeout, ${answers.size}/${N} answered\n`);
    finish();
  }, opt.timeout * 1000);
  tPub = performance.now();
  client.publish(opt.topic, opt.payload, { qos: opt.qos, retain: false }, (err) => {
    if (err)
      die(`publishing: ${err.message}`, 1);
    pubackMs = performance.now() - tPub;
  });
}

function onlineCount() {
  return online.size;
}

client.on('connect', () => {
  const topics = { [opt.logTopic]: { qos: 0 } };
  if (opt.waitOnline > 0)
    topics['/esp/+/status'] = { qos: 0 };
  client.subscribe(topics, (err, granted) => {
    if (err || granted.some((g) => g.qos > 2))
      die(`subscribing to ${Object.keys(topics).join(', ')}: ${err ? err.message : 'refused'}`, 1);
    phase = 'subscribed';
    if (opt.waitOnline <= 0)
      return publish();
    process.stderr.write(`probe: waiting up to ${opt.waitOnline} s for ${N} devices online\n`);
    const end = performance.now() + opt.waitOnline * 1000;
    const poll = setInterval(() => {
      if (onlineCount() >= N || performance.now() >= end) {
        clearInterval(poll);
        if (onlineCount() < N)
          process.stderr.write(`probe: only ${onlineCount()}/${N} online, publishing anyway\n`);
        publish();
      }
    }, 100);
  });
});

client.on('message', (topic, payload) => {
  const levels = topic.split('/');
  if (opt.waitOnline > 0 && levels.length === 4 && levels[0] === '' && levels[1] === 'esp' &&
      levels[3] === 'status') {
    const id = levels[2];
    if (idFilter && !idFilter.test(id))
      return;
    const s = payload.toString();
    if (s.includes('"state":"online"'))
      online.add(id);
    else if (s.includes('"state":"offline"'))
      online.delete(id);
    return;
  }
  const id = levels[idLevel];
  if (phase !== 'waiting' || !id || (idFilter && !idFilter.test(id)) || answers.has(id))
    return;
  if (!match.test(payload.toString()))
    return;
  answers.set(id, performance.now() - tPub);
  if (answers.size >= N)
    finish();
});

client.on('error', (err) => die(`${err.code || err.message}`, 1));
client.on('close', () => {
  if (phase !== 'done')
    die('connection closed', 1);
});
process.on('SIGINT', finish);
process.on('SIGTERM', finish);
