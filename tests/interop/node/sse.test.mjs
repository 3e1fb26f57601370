// Server-Sent Events with the `eventsource` npm package (the WHATWG EventSource, reconnects
// included): `connected` first, messages published over the HTTP API and over WebSocket to
// the same rooms, and a reconnect after the server cut the stream that replays exactly what
// was missed, on every room, through the client's own Last-Event-ID.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { startServer, api as post } from './server.mjs';

const KEY = 'sse-test-key';
let server;
let base;

before(async () => {
  server = await startServer(['--api-key', KEY]);
  base = server.base;
});

after(async () => {
  await server?.stop();
});

const api = (route, body) => post(base, KEY, route, body);

/// Every named event of `source`, in arrival order, as {event, data, id}.
function record(source, names) {
  const seen = [];
  for (const name of names) {
    source.addEventListener(name, (e) => seen.push({ event: name, data: JSON.parse(e.data), id: e.lastEventId }));
  }
  return seen;
}

async function until(what, predicate, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('eventsource: connected, messages from the API and from WebSocket, multi-line data', async () => {
  const source = new EventSource(`${base}/events?channels=news,chat`);
  const seen = record(source, ['connected', 'chat', 'headline']);
  await until('connected', () => seen.length === 1);
  assert.equal(seen[0].event, 'connected');
  assert.deepEqual(seen[0].data.channels, ['news', 'chat']);

  await api('/api/publish', { channel: 'news', type: 'headline', text: 'line one\nline two' });
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
  await new Promise((r) => ws.on('open', r));
  ws.send(JSON.stringify({ type: 'join', room: 'chat' }));
  ws.send(JSON.stringify({ type: 'chat', room: 'chat', text: 'from ws' }));
  await until('two messages', () => seen.length === 3);
  assert.equal(seen[1].event, 'headline');
  assert.equal(seen[1].data.text, 'line one\nline two', 'multi-line data survives');
  assert.equal(seen[1].data.offset, 1);
  assert.equal(seen[2].event, 'chat');
  assert.equal(seen[2].data.text, 'from ws');
  ws.close();
  source.close();
});

test('eventsource: a cut stream reconnects with Last-Event-ID and gets exactly what it missed', async () => {
  const source = new EventSource(`${base}/events?channels=r1,r2`);
  const seen = record(source, ['connected', 'update', 'disconnect', 'reset']);
  await until('connected', () => seen.length === 1);
  const userId = seen[0].data.userId;
  await api('/api/publish', { channel: 'r1', type: 'update', n: 1 });
  await api('/api/publish', { channel: 'r2', type: 'update', n: 2 });
  await until('two updates', () => seen.filter((e) => e.event === 'update').length === 2);

  // Cut: the backend disconnects the user; the stream ends and EventSource reconnects
  // by itself (after the server's retry hint) with its Last-Event-ID.
  let reconnected = 0;
  source.addEventListener('connected', () => { reconnected += 1; });
  await api('/api/disconnect', { userId });
  for (let n = 3; n <= 6; n++) {
    await api('/api/publish', { channel: n % 2 ? 'r1' : 'r2', type: 'update', n });
  }
  await until('reconnect', () => reconnected === 1, 10_000);
  await until('replay', () => seen.filter((e) => e.event === 'update').length === 6, 5000);
  await api('/api/publish', { channel: 'r1', type: 'update', n: 7 });
  await until('live after replay', () => seen.filter((e) => e.event === 'update').length === 7);
  const updates = seen.filter((e) => e.event === 'update');
  const inRoom = (room) => updates.filter((e) => e.data.room === room).map((e) => e.data.n);
  assert.deepEqual(inRoom('r1'), [1, 3, 5, 7], 'no gap, no duplicate, in order per room');
  assert.deepEqual(inRoom('r2'), [2, 4, 6], 'no gap, no duplicate, in order per room');
  assert.ok(!seen.some((e) => e.event === 'reset'), 'history covered the gap');
  source.close();
});
