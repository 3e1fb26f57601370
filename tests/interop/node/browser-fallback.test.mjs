// The browser client's transport fallback (/client.js), in headless Chromium behind a
// loopback proxy (proxy.mjs) that can refuse WebSocket upgrades and buffer streams:
// WebSocket refused → SSE + HTTP API; streaming blocked too → long polling; messages flow
// both ways on each, and when the proxy lets WebSockets through again the client moves
// back up — every message delivered exactly once, in order, across the moves. A page on
// the server directly (WebSocket) is the other side of the conversation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, api as post, jwt, launchChromium } from './server.mjs';
import { startProxy } from './proxy.mjs';

const KEY = 'browser-fallback-key';
const SECRET = 'browser-fallback-secret-0123456789abcdef';
const WAIT_MS = 20_000;

let browser;
let config;

before(async () => {
  browser = await launchChromium();
  config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sb-fallback-')), 'switchboard.toml');
  fs.writeFileSync(config, `[auth.jwt]\nsecrets = ["${SECRET}"]\n`);
});

after(async () => {
  await browser?.close();
});

/// A page of `base` with `window.c` (a client for user `sub`, options `opts`) and what it saw:
/// `window.got` (message bodies), `window.states`, `window.presence`, `window.resyncs`.
async function clientPage(base, sub, opts = {}) {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${base}/health`);
  await page.evaluate(async ({ opts, token }) => {
    const { SwitchboardClient } = await import('/client.js');
    window.got = [];
    window.states = [];
    window.presence = [];
    window.resyncs = [];
    window.c = new SwitchboardClient({ backoffBase: 200, backoffCap: 1000, token: async () => token, ...opts });
    window.c.addEventListener('message', (e) => window.got.push(e.detail.body));
    window.c.addEventListener('state', (e) => window.states.push({ state: e.detail.state, transport: e.detail.transport }));
    window.c.addEventListener('presence', (e) => window.presence.push(e.detail));
    window.c.addEventListener('resync', (e) => window.resyncs.push(e.detail));
  }, { opts, token: jwt(SECRET, sub, 3600) });
  return page;
}

async function waitIn(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 25 });
  } catch (e) {
    const seen = await page.evaluate(() => ({ states: window.states, got: window.got.map((m) => [m.type, m.n, m.offset]) }));
    throw new Error(`timed out waiting for ${what}; the page saw ${JSON.stringify(seen).slice(0, 3000)}`, { cause: e });
  }
}

/// Messages `n` = from..to-1 published to `room` over the API, one every `gap` ms.
async function publishSeries(base, room, from, to, gap) {
  for (let n = from; n < to; n++) {
    await post(base, KEY, '/api/publish', { channel: room, type: 'tick', n });
    await new Promise((r) => setTimeout(r, gap));
  }
}

/// Every `tick` a page got, in order: exactly the series 0..count-1.
async function assertTicks(page, count) {
  const got = await page.evaluate(() => window.got.filter((m) => m.type === 'tick').map((m) => m.n));
  assert.deepEqual(got, Array.from({ length: count }, (_, i) => i), 'each tick once, in order');
}

async function fallbackRoundTrip({ bufferStreams, expected }) {
  const server = await startServer(['--config', config, '--api-key', KEY]);
  const proxy = await startProxy(server.port, { refuseUpgrade: true, bufferStreams });
  const room = `fallback:${expected}`;
  try {
    const far = await clientPage(proxy.base, 'far', { connectTimeout: 2000, upgradeInterval: 1500 });
    const near = await clientPage(server.base, 'near');
    await far.evaluate((room) => window.c.join(room), room);
    // far must be live on its fallback before near joins, or near's `user_joined` goes to
    // the stream attempt the proxy holds back (a join on a stream transport resolves at
    // once, before the transport is known to work).
    await waitIn(far, `far on ${expected}`, (expected) => window.c.transport === expected
      && window.states.at(-1)?.state === 'connected', expected);
    await near.evaluate((room) => window.c.join(room), room);
    // Seen before far's next join, which reopens its stream with the new room list (an
    // event still queued in the old one would go with it).
    await waitIn(far, 'near joining', () => window.presence.some((p) => p.joined && p.userId === 'near'));
    // A room far only reads: its position has the stream's tag of the epoch, not the epoch,
    // so the WebSocket rejoin after the move up asks the epoch first.
    const side = `${room}:side`;
    await far.evaluate((side) => window.c.join(side), side);
    await post(server.base, KEY, '/api/publish', { channel: side, type: 'side', n: 1 });
    await waitIn(far, 'the first side message', () => window.got.some((m) => m.type === 'side'));
    assert.equal(await far.evaluate(() => window.c.transport), expected);
    assert.equal(await near.evaluate(() => window.c.transport), 'websocket');
    assert.ok(proxy.seen.refusedUpgrades >= 1, 'the proxy refused the WebSocket');

    // Both ways on the fallback.
    await near.evaluate((room) => window.c.send(room, 'chat', { text: 'hello far' }), room);
    await waitIn(far, 'the chat from near', () => window.got.some((m) => m.text === 'hello far'));
    const offset = await far.evaluate((room) => window.c.send(room, 'chat', { text: 'hello near' }), room);
    assert.equal(typeof offset, 'number');
    await waitIn(near, 'the chat from far', () => window.got.some((m) => m.text === 'hello near'));
    const heard = await near.evaluate(() => window.got.find((m) => m.text === 'hello near'));
    assert.equal(heard.userId, 'far', 'an HTTP publish with the token carries the user');
    const history = await far.evaluate((room) => window.c.history(room, { since: 0 }), room);
    assert.deepEqual(history.messages.map((m) => m.text), ['hello far', 'hello near']);
    const members = await far.evaluate((room) => window.c.presence(room), room);
    assert.deepEqual(members.map((m) => m.userId).sort(), ['far', 'near']);

    // A series published while the proxy lets WebSockets through again: the client moves
    // up in the middle of it and still gets each message once, in order.
    const series = publishSeries(server.base, room, 0, 60, 50);
    await new Promise((r) => setTimeout(r, 800));
    proxy.modes.refuseUpgrade = false;
    proxy.modes.bufferStreams = false;
    await series;
    await waitIn(far, 'the move back to the WebSocket', () => window.c.transport === 'websocket' && window.c.state === 'connected');
    await waitIn(far, 'all 60 ticks', () => window.got.filter((m) => m.type === 'tick').length >= 60);
    await post(server.base, KEY, '/api/publish', { channel: room, type: 'chat', text: 'after the move' });
    await waitIn(far, 'a message after the move', () => window.got.some((m) => m.text === 'after the move'));
    await assertTicks(far, 60);
    await post(server.base, KEY, '/api/publish', { channel: side, type: 'side', n: 2 });
    await waitIn(far, 'the second side message', () => window.got.filter((m) => m.type === 'side').length >= 2);
    const sides = await far.evaluate(() => window.got.filter((m) => m.type === 'side').map((m) => m.n));
    assert.deepEqual(sides, [1, 2]);
    const epoch = await far.evaluate((side) => window.c._rooms.get(side).position.epoch, side);
    assert.equal(typeof epoch, 'string', 'the epoch was asked before the rejoin');
    // Bounded: timers are made per message received (heartbeats) and must not pile up.
    const timers = await far.evaluate(() => window.c._timers.size);
    assert.ok(timers < 30, `${timers} timers held after 60+ messages`);
    await far.evaluate((room) => window.c.send(room, 'chat', { text: 'far on a WebSocket' }), room);
    await waitIn(near, 'far on its WebSocket', () => window.got.some((m) => m.text === 'far on a WebSocket'));
    const resyncs = await far.evaluate(() => window.resyncs);
    assert.deepEqual(resyncs, [], 'nothing had to be reloaded');
    const transports = await far.evaluate(() => window.states.filter((s) => s.state === 'connected').map((s) => s.transport));
    // (A client with no room yet counts as connected on a stream transport at once: the
    // stream opens with the first join.)
    assert.ok(transports.includes(expected), `connected over ${expected}: ${transports}`);
    assert.equal(transports.at(-1), 'websocket');
    await far.close();
    await near.close();
  } finally {
    await proxy.close();
    await server.stop();
  }
}

test('WebSocket refused by a proxy: SSE + HTTP both ways, then back up to the WebSocket', async () => {
  await fallbackRoundTrip({ bufferStreams: false, expected: 'sse' });
});

test('streams buffered too: long polling both ways, then back up to the WebSocket', async () => {
  await fallbackRoundTrip({ bufferStreams: true, expected: 'poll' });
});

test('a stream cut by the proxy resumes from its position: nothing lost, nothing twice', async () => {
  const server = await startServer(['--config', config, '--api-key', KEY]);
  const proxy = await startProxy(server.port, { refuseUpgrade: true });
  const room = 'fallback:cut';
  try {
    const far = await clientPage(proxy.base, 'far', { transports: ['sse'] });
    await far.evaluate((room) => window.c.join(room), room);
    const series = publishSeries(server.base, room, 0, 40, 40);
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 350));
      proxy.cutAll();
    }
    await series;
    await waitIn(far, 'all 40 ticks', () => window.got.filter((m) => m.type === 'tick').length >= 40);
    await new Promise((r) => setTimeout(r, 300));
    await assertTicks(far, 40);
    assert.ok(proxy.seen.streams >= 4, `the stream was reopened after each cut (${JSON.stringify(proxy.seen)})`);
    await far.close();
  } finally {
    await proxy.close();
    await server.stop();
  }
});

test('on a stream, a join the server refuses fails alone; the stream goes on with the other rooms', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-fallback-deny-'));
  const denying = path.join(dir, 'switchboard.toml');
  fs.writeFileSync(denying, `[auth.jwt]\nsecrets = ["${SECRET}"]\n\n[[auth.permissions]]\nrooms = "secret:*"\nallow = "nobody"\n`);
  const server = await startServer(['--config', denying, '--api-key', KEY]);
  try {
    for (const transports of [['sse'], ['poll']]) {
      const page = await clientPage(server.base, 'far', { transports });
      await page.evaluate(() => window.c.join('open'));
      const refused = await page.evaluate(() => window.c.join('secret:x').then(() => 'joined', (e) => e.code));
      assert.equal(refused, 'forbidden', transports[0]);
      const comma = await page.evaluate(() => window.c.join('a,b').then(() => 'joined', (e) => e.code));
      assert.equal(comma, 'invalid', `${transports[0]}: a comma can not go in channels=`);
      await post(server.base, KEY, '/api/publish', { channel: 'open', type: 'chat', text: `still here (${transports[0]})` });
      await waitIn(page, 'a message in the room that stayed', (t) => window.got.some((m) => m.text === `still here (${t})`), transports[0]);
      assert.equal(await page.evaluate(() => window.c.state), 'connected');
      await page.close();
    }
  } finally {
    await server.stop();
  }
});

test('a presence event both streams of a replacement carry is emitted once; the next one is not held back', async () => {
  // The moment both streams are open is too short to hit from outside: the client's
  // stream entry point is fed the copies a replacement produces, in the order they arrive.
  const server = await startServer(['--config', config, '--api-key', KEY]);
  try {
    const page = await clientPage(server.base, 'watcher', { transports: ['sse'] });
    await page.evaluate(() => window.c.join('stay'));
    await waitIn(page, 'the stream', () => window.c._conn && window.c._conn.greeted);
    const seen = await page.evaluate(() => {
      const c = window.c;
      const live = c._conn;
      const replaced = { kind: 'sse', replaced: true, dead: false, timers: new Set() };
      const joined = { type: 'user_joined', room: 'stay', userId: 'x', user: 'X' };
      const left = { type: 'user_left', room: 'stay', userId: 'x', user: 'X' };
      window.presence.length = 0;
      c._feedMessage(replaced, joined); // on the old stream while both are open
      c._feedMessage(live, joined); // the same event on its successor: a copy
      c._feedMessage(live, left); // what happens next
      c._feedMessage(live, { ...joined }); // and next again (nothing noted any more)
      c._feedMessage(replaced, { ...joined, userId: 'y', user: 'Y' }); // only on the old one
      c._feedMessage(live, { ...left, userId: 'y', user: 'Y' }); // its successor's next
      return window.presence.map((p) => `${p.joined ? '+' : '-'}${p.userId}`);
    });
    assert.deepEqual(seen, ['+x', '-x', '+x', '+y', '-y']);
    await page.close();
  } finally {
    await server.stop();
  }
});

test('on a stream, a join keeps the old stream until the new one is greeted: the others see no leave and rejoin', async () => {
  const server = await startServer(['--config', config, '--api-key', KEY]);
  try {
    const near = await clientPage(server.base, 'near');
    await near.evaluate(() => window.c.join('stay'));
    for (const transport of ['sse', 'poll']) {
      const user = `far-${transport}`;
      const far = await clientPage(server.base, user, { transports: [transport] });
      await far.evaluate(() => window.c.join('stay'));
      await waitIn(near, `${user} joining`, (u) => window.presence.some((p) => p.joined && p.userId === u), user);
      // Each join reopens far's stream with one more room.
      for (let i = 0; i < 3; i++) {
        const room = `more:${transport}:${i}`;
        await far.evaluate((room) => window.c.join(room), room);
        await post(server.base, KEY, '/api/publish', { channel: room, type: 'chat', text: room });
        await waitIn(far, `the message in ${room}`, (room) => window.got.some((m) => m.text === room), room);
      }
      // Time for the server to see the replaced streams go, then a message after it all:
      // near's WebSocket carries presence and messages in order.
      await new Promise((r) => setTimeout(r, 500));
      const end = `end of ${transport}`;
      await post(server.base, KEY, '/api/publish', { channel: 'stay', type: 'chat', text: end });
      await waitIn(near, end, (end) => window.got.some((m) => m.text === end), end);
      const about = await near.evaluate((u) => window.presence.filter((p) => p.userId === u && p.room === 'stay').map((p) => p.joined), user);
      assert.deepEqual(about, [true], `${user} joined once and never left`);
      const stays = await far.evaluate(() => window.got.filter((m) => m.room === 'stay').map((m) => m.text));
      assert.deepEqual(stays, [end], `${transport}: each message once`);
      await far.close();
    }
    await near.close();
  } finally {
    await server.stop();
  }
});
