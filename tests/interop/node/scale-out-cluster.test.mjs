// Scale-out over a Redis Cluster: three switchboard processes with
// `--broker redis+cluster://…` on three real cluster-enabled `redis-server`s (three masters).
// Rooms land on every shard (sharded pub/sub: SPUBLISH/SSUBSCRIBE per room); third-party
// clients (ws, eventsource, socket.io-client) on different nodes see one conversation per
// room; pub/sub connections cut by every shard lose nothing; a node killed with SIGKILL is
// resumed elsewhere; Engine.IO polling reaches its session through any node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { io } from 'socket.io-client';
import { startServer, startRedisCluster, api as post, until, resumingMember } from './server.mjs';

const KEY = 'cluster-test-key';
let cluster;
let nodes = [];

before(async () => {
  cluster = await startRedisCluster();
  const flags = ['--api-key', KEY, '--broker', cluster.url, '--broker-timeout', '2s', '--rate-limit', 'off'];
  for (let i = 0; i < 3; i++) nodes.push(await startServer(flags));
});

after(async () => {
  for (const node of nodes) await node.stop().catch(() => {});
  await cluster?.stop();
});

/// The index of the master that owns `key`'s slot (node 0's view of the cluster).
function shardOf(key) {
  const slot = Number(cluster.cli(0, 'CLUSTER', 'KEYSLOT', key).trim());
  const lines = cluster.cli(0, 'CLUSTER', 'NODES').trim().split('\n');
  for (const line of lines) {
    const fields = line.split(' ');
    for (const range of fields.slice(8)) {
      const [lo, hi = lo] = range.split('-').map(Number);
      if (lo <= slot && slot <= hi) {
        const port = Number(fields[1].split(':')[1].split('@')[0]);
        return cluster.ports.indexOf(port);
      }
    }
  }
  throw new Error(`nobody owns slot ${slot}`);
}

/// Rooms whose channels cover all three shards.
function roomsOnEveryShard(prefix, count) {
  const rooms = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  assert.equal(new Set(rooms.map((r) => shardOf(`sb:{${r}}`))).size, 3, 'pick other names: a shard has no room');
  return rooms;
}

/// A native WebSocket client on `node` joined to `rooms`: messages of `type` per room.
async function wsMember(node, rooms, type) {
  const ws = new WebSocket(`${node.base.replace('http', 'ws')}/ws`);
  const seen = Object.fromEntries(rooms.map((r) => [r, []]));
  let joined = 0;
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.type === 'joined') joined += 1;
    if (m.type === type) seen[m.room].push(m);
  });
  await new Promise((r) => ws.once('open', r));
  for (const room of rooms) ws.send(JSON.stringify({ type: 'join', room }));
  await until('joined', () => joined === rooms.length);
  return { ws, seen };
}

/// An SSE stream on `node` over `rooms`: messages of `type` per room. `connected` comes
/// once every join is done, so what is published after it is for this stream (the tests
/// publish right after it).
async function sseMember(node, rooms, type) {
  const source = new EventSource(`${node.base}/events?channels=${rooms.join(',')}`);
  const seen = Object.fromEntries(rooms.map((r) => [r, []]));
  source.addEventListener(type, (e) => {
    const m = JSON.parse(e.data);
    seen[m.room ?? m.channel].push(m);
  });
  await new Promise((r) => source.addEventListener('connected', r, { once: true }));
  return { source, seen };
}

const offsets = (seen) => Object.fromEntries(Object.entries(seen).map(([r, list]) => [r, list.map((m) => m.offset)]));
const oneToN = (rooms, n) => Object.fromEntries(rooms.map((r) => [r, Array.from({ length: n }, (_, i) => i + 1)]));

test('rooms on every shard: WebSocket, SSE and Socket.IO clients on three nodes see one offset sequence per room', async () => {
  const rooms = roomsOnEveryShard('lobby', 6);
  const [a, b, c] = nodes;
  const ws = await wsMember(a, rooms, 'note');
  const sse = await sseMember(b, rooms, 'note');
  const sio = io(c.base, { transports: ['websocket'], reconnection: false });
  const sioSeen = Object.fromEntries(rooms.map((r) => [r, []]));
  sio.on('note', (m) => sioSeen[m.room].push(m));
  for (const room of rooms) assert.deepEqual(await sio.emitWithAck('join_room', room), { status: 'ok', room });
  await new Promise((r) => setTimeout(r, 200));

  // Publishes through every node's HTTP API, and from the clients themselves.
  for (let n = 0; n < 4; n++) {
    for (const [i, room] of rooms.entries()) {
      await post(nodes[(n + i) % 3].base, KEY, '/api/publish', { channel: room, type: 'note', n });
    }
  }
  // (Sent without an answer: seen back before the next publishes, to keep their order.)
  for (const room of rooms) ws.ws.send(JSON.stringify({ type: 'note', room, n: 4 }));
  await until('the WebSocket client\'s own publishes', () => rooms.every((r) => ws.seen[r].length === 5));
  for (const room of rooms) {
    const ack = await sio.emitWithAck('note', { room, n: 5 });
    assert.equal(ack.status, 'ok', JSON.stringify(ack));
  }
  const want = oneToN(rooms, 6);
  await until('every message on every node', () => [ws.seen, sse.seen, sioSeen].every((s) => rooms.every((r) => s[r].length >= 6)), 10_000);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(offsets(ws.seen), want, 'WebSocket on node a');
  assert.deepEqual(offsets(sse.seen), want, 'SSE on node b');
  assert.deepEqual(offsets(sioSeen), want, 'Socket.IO on node c (its own events too)');
  for (const room of rooms) {
    assert.deepEqual(ws.seen[room].map((m) => m.n), [0, 1, 2, 3, 4, 5]);
  }
  // History and presence are the deployment's, whichever node answers.
  for (const node of nodes) {
    const res = await fetch(`${node.base}/api/presence?channel=${rooms[0]}`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal((await res.json()).members.length, 3);
  }
  ws.ws.close();
  sse.source.close();
  sio.close();
});

test('every shard cutting its pub/sub connections mid-stream: nothing lost, nothing twice', async () => {
  const rooms = roomsOnEveryShard('ticker', 6);
  const [a, b, c] = nodes;
  const ws = await wsMember(b, rooms, 'tick');
  const sse = await sseMember(c, rooms, 'tick');
  let n = 0;
  const publishRound = async () => {
    n += 1;
    for (const room of rooms) await post(a.base, KEY, '/api/publish', { channel: room, type: 'tick', n });
  };
  await publishRound();
  await until('the first round', () => rooms.every((r) => ws.seen[r].length === 1 && sse.seen[r].length === 1));
  let killed = 0;
  for (let i = 0; i < 3; i++) killed += Number(cluster.cli(i, 'CLIENT', 'KILL', 'TYPE', 'pubsub').trim());
  assert.ok(killed >= 3, `only ${killed} pub/sub connections cut`);
  for (let round = 0; round < 10; round++) await publishRound();
  await new Promise((r) => setTimeout(r, 1000));
  await publishRound();
  await until('every round', () => [ws.seen, sse.seen].every((s) => rooms.every((r) => s[r].length >= n)), 10_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(offsets(ws.seen), oneToN(rooms, n));
  assert.deepEqual(offsets(sse.seen), oneToN(rooms, n));
  const metrics = await (await fetch(`${b.base}/metrics`)).text();
  assert.match(metrics, /^switchboard_broker_reconnects_total [1-9]/m, 'the cut is reported');
  ws.ws.close();
  sse.source.close();
});

test('Engine.IO polling reaches its session through any node (forwarded over a shard channel)', async () => {
  const [a, b, c] = nodes;
  const eio = (base, query = '') => `${base}/socket.io/?EIO=4&transport=polling${query}`;
  const open = await (await fetch(eio(a.base))).text();
  const { sid } = JSON.parse(open.slice(1));
  const posted = await fetch(eio(b.base, `&sid=${sid}`), { method: 'POST', body: '40', headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  assert.equal(posted.status, 200);
  const connected = await (await fetch(eio(c.base, `&sid=${sid}`))).text();
  assert.match(connected, /^40\{"sid":"[^"]+"/);
  // A session no node holds any more is refused at once, not after a timeout.
  const started = Date.now();
  const gone = await fetch(eio(b.base, `&sid=${sid.slice(0, -2)}xx`));
  assert.equal(gone.status, 400);
  assert.ok(Date.now() - started < 3000);
});

test('a node killed with SIGKILL: its clients resume on another node from their offsets, nothing lost', async () => {
  const room = 'resume';
  const [a, b, c] = nodes;
  // Each client's first connection goes to node c; later ones to a and b in turn.
  const members = [0, 1, 2].map((i) => {
    const m = resumingMember({
      url: (attempt) => `${(attempt === 0 ? c : nodes[(attempt + i) % 2]).base.replace('http', 'ws')}/ws`,
      room,
      onMessage: (member, msg) => { if (msg.type === 'tick') member.ticks.push(msg.n); },
    });
    m.ticks = [];
    return m;
  });
  await until('joined', () => members.every((m) => m.joins.length === 1));
  let n = 0;
  const publishing = (async () => {
    for (; n < 60; ) {
      n += 1;
      await post((n % 2 ? a : b).base, KEY, '/api/publish', { channel: room, type: 'tick', n });
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  await until('a few ticks', () => members.every((m) => m.ticks.length >= 5));
  process.kill(c.pid, 'SIGKILL');
  await publishing;
  await until('every tick', () => members.every((m) => m.ticks.length >= 60), 15_000);
  await new Promise((r) => setTimeout(r, 300));
  for (const m of members) {
    assert.deepEqual(m.ticks, Array.from({ length: 60 }, (_, i) => i + 1), 'no gap, no duplicate, in order');
    assert.ok(m.joins.length >= 2 && m.joins.at(-1).recovered, JSON.stringify(m.joins));
    m.close();
  }
  nodes = nodes.filter((node) => node !== c);
});
