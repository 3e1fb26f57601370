// Three switchboard nodes on one real redis-server behind the documented proxy
// configurations (deploy/nginx.conf, deploy/haproxy.cfg), run for real. WebSocket clients
// spread over the nodes (from different loopback source addresses) each get every message
// of a numbered stream once, in order; `kill -9` of a node sends its clients through the
// proxy to the others, where they resume from their offsets with nothing lost; its users
// leave presence within the presence TTL. No stickiness: Socket.IO over polling and
// native long polling keep one session while the proxy sends each request to another node
// (the nodes forward it to the one that holds the session).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import { startServer, startRedis, freePort, root, api as post, until, resumingMember } from './server.mjs';

const KEY = 'proxy-test-key';
const ROOM = 'stream';
const CLIENTS = 6;

/// The documented configuration with this run's ports (and files in `dir`).
function configure(file, dir, front, nodes) {
  let text = fs.readFileSync(path.join(root, 'deploy', file), 'utf8');
  text = text.replaceAll('127.0.0.1:8080', `127.0.0.1:${front}`);
  nodes.forEach((node, i) => { text = text.replaceAll(`127.0.0.1:808${i + 1}`, `127.0.0.1:${node.port}`); });
  text = text.replace('/tmp/switchboard-nginx.pid', path.join(dir, 'nginx.pid'));
  const out = path.join(dir, file);
  fs.writeFileSync(out, text);
  return out;
}

const PROXIES = {
  nginx: (config, dir) => spawn('nginx', ['-p', dir, '-c', config, '-g', 'daemon off;'], { stdio: 'inherit' }),
  haproxy: (config) => spawn('haproxy', ['-db', '-f', config], { stdio: 'inherit' }),
};

async function startProxy(name, nodes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sb-${name}-`));
  const front = await freePort();
  const config = configure(name === 'nginx' ? 'nginx.conf' : 'haproxy.cfg', dir, front, nodes);
  const child = PROXIES[name](config, dir);
  let spawnError;
  child.on('error', (e) => { spawnError = e; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const base = `http://127.0.0.1:${front}`;
  // Ready when it answers /health through to a node.
  await until(`${name} to start`, async () => {
    if (spawnError) throw new Error(`${name} is required (scripts/test.sh installs it): ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode})`);
    try {
      return (await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) })).status === 200;
    } catch {
      return false;
    }
  });
  return {
    base,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/// A member of ROOM through the proxy from `source`, resuming from its offset when cut.
function client(base, source) {
  const c = resumingMember({
    url: () => `${base.replace('http', 'ws')}/ws`,
    room: ROOM,
    options: { localAddress: source },
    onMessage: (member, m) => { if (m.type === 'tick') member.ticks.push(m.n); },
  });
  c.ticks = [];
  return c;
}

/// Local members of ROOM on `node` (the node's own view).
async function members(node) {
  const res = await fetch(`${node.base}/api/channels`, { headers: { authorization: `Bearer ${KEY}` } });
  const body = await res.json();
  return body.channels.find((c) => c.channel === ROOM)?.members ?? 0;
}

async function presence(base) {
  const res = await fetch(`${base}/api/presence?channel=${ROOM}`, { headers: { authorization: `Bearer ${KEY}` } });
  return (await res.json()).members.length;
}

for (const name of Object.keys(PROXIES)) {
  test(`${name} in front of three nodes: every message once, in order; kill -9 of a node loses nothing`, async () => {
    // Everything started is stopped whatever fails (a process left running would keep
    // the test runner waiting forever).
    const started = [];
    const clients = [];
    try {
      const redis = await startRedis();
      started.push(() => redis.stop());
      const flags = ['--api-key', KEY, '--broker', redis.url, '--broker-presence-ttl', '3s'];
      const nodes = [];
      for (let i = 0; i < 3; i++) {
        const node = await startServer(flags);
        nodes.push(node);
        // A node killed by the test is not stopped again.
        started.push(() => (node.killed ? undefined : node.stop()));
      }
      const proxy = await startProxy(name, nodes);
      started.push(() => proxy.stop());
      for (let i = 0; i < CLIENTS; i++) clients.push(client(proxy.base, `127.0.0.${10 + i}`));
      await until('every client joined', () => clients.every((c) => c.joins.length === 1));
      const spread = await Promise.all(nodes.map(members));
      assert.equal(spread.reduce((a, b) => a + b, 0), CLIENTS, `members per node: ${spread}`);
      assert.ok(spread.filter((n) => n > 0).length >= 2, `clients spread over the nodes: ${spread}`);
      assert.equal(await presence(proxy.base), CLIENTS);

      // A numbered stream published through the proxy (so through every node).
      for (let n = 1; n <= 20; n++) await post(proxy.base, KEY, '/api/publish', { channel: ROOM, type: 'tick', n });
      await until('the first 20 everywhere', () => clients.every((c) => c.ticks.length === 20));

      // kill -9 the node with the most members; the stream goes on meanwhile.
      const victim = spread.indexOf(Math.max(...spread));
      nodes[victim].killed = true;
      process.kill(nodes[victim].pid, 'SIGKILL');
      const moved = spread[victim];
      for (let n = 21; n <= 40; n++) await post(proxy.base, KEY, '/api/publish', { channel: ROOM, type: 'tick', n });
      await until('all 40 everywhere', () => clients.every((c) => c.ticks.length >= 40), 15_000);
      const expected = Array.from({ length: 40 }, (_, i) => i + 1);
      for (const c of clients) assert.deepEqual(c.ticks, expected, 'no gap, no duplicate, in order');
      const resumed = clients.filter((c) => c.joins.length > 1);
      assert.equal(resumed.length, moved, 'the dead node\'s clients reconnected elsewhere');
      for (const c of resumed) assert.equal(c.joins.at(-1).recovered, true);
      // The dead node's users left presence, then came back through their new node: the
      // presence converges to the clients that are connected (within the TTL).
      await until('presence converges', async () => (await presence(proxy.base)) === CLIENTS, 10_000);
      for (const c of clients) c.close();
      await until('presence empties', async () => (await presence(proxy.base)) === 0, 10_000);
    } finally {
      for (const c of clients) c.close();
      const errors = [];
      for (const stop of started.reverse()) {
        try { await stop(); } catch (e) { errors.push(e); }
      }
      if (errors.length) throw errors[0];
    }
  });
}

/// Requests the node at `base` forwarded to the node holding their session.
async function forwarded(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('switchboard_forwarded_requests_total '));
  return Number(line?.split(' ')[1] ?? NaN);
}

for (const name of Object.keys(PROXIES)) {
  test(`${name}, round robin: Socket.IO polling and long polling keep their session across nodes`, async () => {
    const started = [];
    let socket;
    try {
      const redis = await startRedis();
      started.push(() => redis.stop());
      const nodes = [];
      for (let i = 0; i < 3; i++) {
        const node = await startServer(['--api-key', KEY, '--broker', redis.url]);
        nodes.push(node);
        started.push(() => node.stop());
      }
      const proxy = await startProxy(name, nodes);
      started.push(() => proxy.stop());

      // Socket.IO on polling only: every GET and POST may land on any node.
      socket = io(proxy.base, { transports: ['polling'], reconnection: false });
      const seen = [];
      socket.on('message', (m) => seen.push(m.data.n));
      await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
      const sid = socket.io.engine.id;
      assert.deepEqual(await socket.emitWithAck('join_room', 'rr'), { status: 'ok', room: 'rr' });
      for (let n = 1; n <= 20; n++) {
        await post(proxy.base, KEY, '/api/publish', { room: 'rr', data: { n } });
        // Events from the client interleave with the held GETs.
        if (n % 5 === 0) assert.deepEqual(await socket.emitWithAck('join_room', 'rr'), { status: 'ok', room: 'rr' });
      }
      await until('20 messages over polling', () => seen.length === 20, 15_000);
      assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i + 1), 'once each, in order');
      assert.ok(socket.connected, 'still connected');
      assert.equal(socket.io.engine.id, sid, 'one Engine.IO session throughout');

      // Clients with the default transports: the upgrade's WebSocket lands on any node; on
      // another than the session's it is refused, and the client goes on polling.
      const upgrading = [];
      for (let i = 0; i < 6; i++) {
        const client = io(proxy.base, { reconnection: false, forceNew: true });
        client.got = [];
        client.on('message', (m) => client.got.push(m.data.n));
        // Listened for at once: the clients connect concurrently.
        client.opened = new Promise((resolve, reject) => { client.once('connect', resolve); client.once('connect_error', reject); });
        upgrading.push(client);
      }
      try {
        for (const client of upgrading) {
          await client.opened;
          assert.deepEqual(await client.emitWithAck('join_room', 'up'), { status: 'ok', room: 'up' });
        }
        // Time for the upgrades to be tried.
        await new Promise((r) => setTimeout(r, 500));
        for (let n = 1; n <= 5; n++) await post(proxy.base, KEY, '/api/publish', { room: 'up', data: { n } });
        await until('5 messages to every default client', () => upgrading.every((c) => c.got.length === 5), 15_000);
        for (const client of upgrading) {
          assert.deepEqual(client.got, [1, 2, 3, 4, 5]);
          assert.ok(client.connected);
        }
      } finally {
        for (const client of upgrading) client.close();
      }

      // Native long polling: one session across polls (its cursor keeps its session id).
      let answer = await (await fetch(`${proxy.base}/poll?channels=ticks`)).json();
      const session = answer.cursor.split('.')[0];
      for (let n = 1; n <= 10; n++) await post(proxy.base, KEY, '/api/publish', { channel: 'ticks', type: 'tick', n });
      const ticks = [];
      const joined = [];
      for (let polls = 0; ticks.length < 10 && polls < 40; polls++) {
        const url = `${proxy.base}/poll?channels=ticks&cursor=${encodeURIComponent(answer.cursor)}`;
        answer = await (await fetch(url, { signal: AbortSignal.timeout(30_000) })).json();
        assert.equal(answer.cursor.split('.')[0], session, 'the same poll session');
        for (const m of answer.messages) {
          if (m.type === 'tick') ticks.push(m.n);
          if (m.type === 'joined') joined.push(m);
        }
      }
      assert.deepEqual(ticks, Array.from({ length: 10 }, (_, i) => i + 1));
      assert.equal(joined.length, 0, 'no second join: the session was never made again');

      const counts = await Promise.all(nodes.map((node) => forwarded(node.base)));
      assert.ok(counts.reduce((a, b) => a + b, 0) > 0, `requests were forwarded: ${counts}`);

      // A session id naming no live node is refused at once, as an unknown one.
      const t0 = Date.now();
      const bogus = await fetch(`${proxy.base}/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA`);
      assert.equal(bogus.status, 400);
      assert.deepEqual(await bogus.json(), { code: 1, message: 'Session ID unknown' });
      assert.ok(Date.now() - t0 < 2000, 'answered without waiting for a timeout');
    } finally {
      socket?.close();
      const errors = [];
      for (const stop of started.reverse()) {
        try { await stop(); } catch (e) { errors.push(e); }
      }
      if (errors.length) throw errors[0];
    }
  });
}
