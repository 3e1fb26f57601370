// Server-Sent Events in a real browser: headless Chromium (Debian's `chromium`, driven by
// playwright-core) opens a page served by switchboard itself and runs the browser's own
// `EventSource` on `/events?channels=a,b`. `connected` comes first; a message published over
// the HTTP API and one sent over WebSocket arrive with their fields; after the server cuts
// the stream (`POST /api/disconnect`), Chromium's own reconnect (after the `retry:` hint,
// with the `Last-Event-ID` it keeps itself) replays exactly the messages published while it
// was away, in both rooms, then goes live.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { startServer, api as post } from './server.mjs';

const KEY = 'browser-sse-key';
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
/// Every wait is bounded by this (the reconnect itself takes the server's 2 s retry hint).
const WAIT_MS = 10_000;
/// The event names the page listens for: every name the stream may send in this test (and
/// the ones it must not send), so that "nothing else arrived" means something.
const NAMES = ['connected', 'reset', 'disconnect', 'lagged', 'server_error', 'user_joined', 'user_left',
  'message', 'update', 'chat'];

let server;
let browser;
let page;
/// Every request the page made to /events: {url, lastEventId (the request header)}.
const streamRequests = [];

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/test.sh does), or set CHROMIUM_BIN`);
  }
  server = await startServer(['--api-key', KEY]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 30_000 });
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('request', async (request) => {
    if (new URL(request.url()).pathname !== '/events') return;
    const entry = { url: request.url(), lastEventId: undefined };
    streamRequests.push(entry);
    entry.lastEventId = (await request.allHeaders())['last-event-id'] ?? null;
  });
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
});

const api = (route, body) => post(server.base, KEY, route, body);

/// The page's record of what its EventSource saw.
const seen = () => page.evaluate(() => window.seen);

/// Wait until `predicate(window.seen, arg)` holds in the page; on timeout, fail with what the
/// page saw.
async function until(what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 20 });
  } catch (e) {
    throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}; the page saw ${JSON.stringify(await seen(), null, 1)}`, { cause: e });
  }
}

/// A WebSocket client of `/ws` and its messages; `next(type)` waits for one of that type.
async function wsClient(url) {
  const ws = new WebSocket(url);
  const inbox = [];
  const waiters = [];
  ws.on('message', (data) => {
    inbox.push(JSON.parse(data.toString()));
    for (const w of waiters.splice(0)) w();
  });
  const next = async (type) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`WebSocket: no ${type} within ${WAIT_MS} ms; got ${JSON.stringify(inbox)}`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
    }
  };
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`WebSocket: no open within ${WAIT_MS} ms`)), WAIT_MS);
    ws.once('open', () => { clearTimeout(timer); resolve(); });
    ws.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  return { ws, next };
}

/// An event id, decoded as protocol.md describes it: per room (in `channels` order), its
/// offset (base 36) and epoch tag, or null for a room without a position.
function position(id) {
  return id.split('.').map((part) => {
    if (part === '_') return null;
    const [offset, tag] = part.split('-');
    return { offset: parseInt(offset, 36), tag };
  });
}

test('chromium EventSource: connected, API and WebSocket messages, a cut stream replayed by the browser\'s own reconnect', { timeout: 60_000 }, async () => {
  // Same origin as the stream: no CORS involved.
  await page.goto(`${server.base}/health`);
  await page.evaluate((names) => {
    window.seen = [];
    const source = new EventSource('/events?channels=a,b');
    window.source = source;
    for (const name of names) {
      source.addEventListener(name, (e) => {
        window.seen.push({ event: name, data: JSON.parse(e.data), id: e.lastEventId });
      });
    }
    // Connection state changes (no data): the stream opened, or was lost (readyState 0 =
    // reconnecting, 2 = given up).
    source.addEventListener('open', () => window.seen.push({ event: 'open', readyState: source.readyState }));
    source.addEventListener('error', () => window.seen.push({ event: 'error', readyState: source.readyState }));
  }, NAMES);

  // 1. `connected` first.
  await until('connected', () => window.seen.some((e) => e.event === 'connected'));
  let events = await seen();
  const firstStreamEvent = events.find((e) => e.event !== 'open');
  assert.equal(firstStreamEvent.event, 'connected', 'connected is the first event');
  const connected = firstStreamEvent.data;
  assert.equal(connected.type, 'connected');
  assert.deepEqual(connected.channels, ['a', 'b']);
  assert.equal(typeof connected.connectionId, 'string');
  assert.ok(connected.connectionId.length > 0);
  assert.equal(typeof connected.userId, 'string');
  assert.ok(connected.userId.length > 0);
  assert.ok(firstStreamEvent.id, 'connected carries an event id');

  // 2. A message published over the HTTP API to room a.
  const published = await api('/api/publish', { channel: 'a', type: 'update', data: { n: 1, text: 'from the API' } });
  assert.equal(published.offset, 1);
  await until('the API message', () => window.seen.some((e) => e.event === 'update'));

  // 3. One sent over WebSocket to room b.
  const { ws, next } = await wsClient(`${server.base.replace('http', 'ws')}/ws`);
  try {
    const welcome = await next('welcome');
    ws.send(JSON.stringify({ type: 'join', room: 'b' }));
    await next('joined');
    ws.send(JSON.stringify({ type: 'chat', room: 'b', text: 'hi' }));
    await until('the WebSocket message', () => window.seen.some((e) => e.event === 'chat'));

    events = await seen();
    const update = events.find((e) => e.event === 'update');
    assert.equal(update.data.type, 'update');
    assert.equal(update.data.room, 'a');
    assert.deepEqual(update.data.data, { n: 1, text: 'from the API' });
    assert.equal(update.data.offset, 1);
    assert.equal(update.data.userId, 'api');
    assert.equal(typeof update.data.id, 'string');
    assert.equal(typeof update.data.timestamp, 'number');
    const chat = events.find((e) => e.event === 'chat');
    assert.equal(chat.data.type, 'chat');
    assert.equal(chat.data.room, 'b');
    assert.equal(chat.data.text, 'hi');
    assert.equal(chat.data.offset, 1);
    assert.equal(chat.data.userId, welcome.userId, 'the sender is the WebSocket client');
    assert.equal(typeof chat.data.id, 'string');
    assert.equal(typeof chat.data.timestamp, 'number');
    assert.deepEqual(position(update.id).map((p) => p?.offset), [1, 0]);
    assert.deepEqual(position(chat.id).map((p) => p?.offset), [1, 1]);
  } finally {
    ws.terminate();
  }
  // Its presence in room b came too (events without an id): wait for its `user_left`, so
  // that nothing of it can arrive after the cut.
  await until('user_left of the WebSocket client', () => window.seen.some((e) => e.event === 'user_left'));
  const beforeCut = await seen();
  assert.deepEqual(beforeCut.map((e) => e.event), ['open', 'connected', 'update', 'user_joined', 'chat', 'user_left'],
    'before the cut: connected, the two messages and the WebSocket client\'s presence, nothing else');
  for (const e of beforeCut.filter((e) => e.event.startsWith('user_'))) {
    assert.equal(e.data.room, 'b');
    assert.equal(e.data.userId, beforeCut.find((e) => e.event === 'chat').data.userId);
  }

  // 4. The backend cuts the stream: `event: disconnect`, then the stream ends and the
  // browser starts reconnecting by itself (readyState CONNECTING).
  const lastIdBeforeCut = beforeCut.find((e) => e.event === 'chat').id;
  assert.equal(beforeCut.at(-1).id, lastIdBeforeCut, 'an event without an id keeps the last event id');
  const cut = await api('/api/disconnect', { userId: connected.userId });
  assert.equal(cut.disconnected, 1, 'one connection of that user: the stream');
  await until('the disconnect event and the stream end', () =>
    window.seen.some((e) => e.event === 'disconnect') && window.seen.some((e) => e.event === 'error'));
  events = await seen();
  const disconnect = events.find((e) => e.event === 'disconnect');
  assert.equal(disconnect.data.type, 'disconnect');
  assert.equal(disconnect.data.code, 1008);
  assert.equal(typeof disconnect.data.reason, 'string');
  assert.equal(events.find((e) => e.event === 'error').readyState, 0, 'EventSource is reconnecting, not closed');

  // 5. Published while the browser is away: 3 to a, 2 to b.
  const missed = [['a', 'm1'], ['b', 'm2'], ['a', 'm3'], ['b', 'm4'], ['a', 'm5']];
  for (const [channel, text] of missed) {
    await api('/api/publish', { channel, type: 'update', data: { text } });
  }
  assert.equal((await seen()).filter((e) => e.event === 'connected').length, 1,
    'the browser reconnected before the missed messages were all published (the retry hint is 2 s)');

  // 6. The browser's own reconnect: a second `connected`, then exactly the missed messages.
  await until('the reconnect (a second connected)', () => window.seen.filter((e) => e.event === 'connected').length === 2);
  await until('the replay of the 5 missed messages', () =>
    window.seen.filter((e) => e.event === 'update').length === 1 + 5);
  await api('/api/publish', { channel: 'a', type: 'update', data: { text: 'live' } });
  await until('the live message after the replay', () => window.seen.filter((e) => e.event === 'update').length === 1 + 5 + 1);
  // Anything queued behind it would show up within a moment.
  await new Promise((r) => setTimeout(r, 300));

  events = await seen();
  const afterCut = events.slice(events.findIndex((e) => e.event === 'disconnect') + 1);
  assert.deepEqual(afterCut.map((e) => e.event),
    ['error', 'open', 'connected', 'update', 'update', 'update', 'update', 'update', 'update'],
    'after the cut: the reconnect, the 5 missed messages, the live one, nothing else');
  const reconnected = afterCut.find((e) => e.event === 'connected');
  assert.deepEqual(reconnected.data.channels, ['a', 'b']);
  assert.notEqual(reconnected.data.connectionId, connected.connectionId, 'a new connection');
  assert.equal(reconnected.id, lastIdBeforeCut, 'the reconnect resumes at the last event id the browser had');

  // Chromium sent that id itself.
  assert.equal(streamRequests.length, 2, `two requests to /events: ${JSON.stringify(streamRequests)}`);
  assert.equal(streamRequests[0].lastEventId, null, 'the first request has no Last-Event-ID');
  assert.equal(streamRequests[1].lastEventId, lastIdBeforeCut, 'the browser reconnects with its Last-Event-ID');
  assert.equal(new URL(streamRequests[1].url).search, '?channels=a,b');

  const replayed = afterCut.filter((e) => e.event === 'update');
  const live = replayed.pop();
  const inRoom = (room) => replayed.filter((e) => e.data.room === room).map((e) => [e.data.data.text, e.data.offset]);
  assert.deepEqual(inRoom('a'), [['m1', 2], ['m3', 3], ['m5', 4]], 'room a: the 3 missed, in order, offsets right after 1');
  assert.deepEqual(inRoom('b'), [['m2', 2], ['m4', 3]], 'room b: the 2 missed, in order, offsets right after 1');
  assert.equal(live.data.room, 'a');
  assert.equal(live.data.data.text, 'live');
  assert.equal(live.data.offset, 5);

  // Event ids: every message moves the id; each names the stream's position in both rooms.
  const messages = events.filter((e) => e.event === 'update' || e.event === 'chat');
  const ids = messages.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `every message has its own event id: ${ids}`);
  let expected = { a: 0, b: 0 };
  for (const m of messages) {
    expected = { ...expected, [m.data.room]: m.data.offset };
    assert.deepEqual(position(m.id).map((p) => p?.offset), [expected.a, expected.b], `the id ${m.id} of ${JSON.stringify(m.data)}`);
  }
  assert.ok(!events.some((e) => e.event === 'reset'), 'history covered the gap: no reset');
  await page.evaluate(() => window.source.close());
});
