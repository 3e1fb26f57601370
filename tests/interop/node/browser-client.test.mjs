// The browser client (/client.js, clients/browser/) in a real browser: headless Chromium
// (Debian's `chromium`, driven by playwright-core) loads pages served by switchboard itself.
// Two pages chat in one room with presence; the landing page's own live room works; a
// server restart (history in a real `redis-server`) while a page is open → the page
// reconnects and has every message exactly once, in order; the offline queue's bound;
// `pages = false` serves no pages. Also reports client.js's gzipped size beside
// socket.io-client's browser bundle.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { startServer, startRedis, freePort, binary, root, api as post, until, launchChromium } from './server.mjs';

const KEY = 'browser-client-key';
const WAIT_MS = 15_000;

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

/// A page of `base` with a client of its own: `window.c` (options `opts`), `window.got` (every
/// message event's body), `window.states`, `window.presence`, `window.resyncs`.
async function clientPage(base, opts = {}) {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${base}/health`);
  await page.evaluate(async (opts) => {
    const { SwitchboardClient } = await import('/client.js');
    window.got = [];
    window.states = [];
    window.presence = [];
    window.resyncs = [];
    window.c = new SwitchboardClient({ backoffBase: 200, backoffCap: 1000, ...opts });
    window.c.addEventListener('message', (e) => window.got.push(e.detail.body));
    window.c.addEventListener('state', (e) => window.states.push(e.detail));
    window.c.addEventListener('presence', (e) => window.presence.push(e.detail));
    window.c.addEventListener('resync', (e) => window.resyncs.push(e.detail));
  }, opts);
  return page;
}

async function waitIn(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 25 });
  } catch (e) {
    const seen = await page.evaluate(() => ({ got: window.got, states: window.states }));
    throw new Error(`timed out waiting for ${what}; the page saw ${JSON.stringify(seen).slice(0, 2000)}`, { cause: e });
  }
}

test('two pages chat in one room, with presence and acknowledged sends', async () => {
  const server = await startServer(['--api-key', KEY]);
  try {
    const a = await clientPage(server.base, { name: 'ada' });
    const b = await clientPage(server.base, { name: 'bob' });
    await a.evaluate(() => window.c.join('room1'));
    await b.evaluate(() => window.c.join('room1'));
    await waitIn(a, 'bob joining', () => window.presence.some((p) => p.joined && p.user === 'bob'));
    const offset = await a.evaluate(() => window.c.send('room1', 'chat', { text: 'hello from ada' }));
    assert.equal(typeof offset, 'number');
    await b.evaluate(() => window.c.send('room1', 'typing', { on: true }));
    for (const page of [a, b]) {
      await waitIn(page, 'both messages', () => window.got.length >= 2);
      const got = await page.evaluate(() => window.got);
      assert.deepEqual(got.map((m) => [m.type, m.user]), [['chat', 'ada'], ['typing', 'bob']]);
      assert.equal(got[0].text, 'hello from ada');
    }
    const members = await a.evaluate(() => window.c.presence('room1'));
    assert.deepEqual(members.map((m) => m.user).sort(), ['ada', 'bob']);
    const history = await b.evaluate(() => window.c.history('room1', { since: 0 }));
    assert.equal(history.messages.length, 2);
    // Refusals are answered: a room not joined, a bad name (before anything is sent).
    const refused = await a.evaluate(() => window.c.publish('elsewhere', 1).catch((e) => e.code));
    assert.equal(refused, 'not_in_room');
    const invalid = await a.evaluate(() => window.c.publish('', 1).then(() => 'sent', (e) => e.code));
    assert.equal(invalid, 'invalid');
    await a.evaluate(() => window.c.leave('room1'));
    await waitIn(b, 'ada leaving', () => window.presence.some((p) => !p.joined && p.user === 'ada'));
    await a.evaluate(() => window.c.close());
    assert.equal(await a.evaluate(() => window.states.at(-1).state), 'closed');
    await a.close();
    await b.close();
  } finally {
    await server.stop();
  }
});

test('the landing page is served with a live room; pages can be turned off', async () => {
  const server = await startServer(['--api-key', KEY]);
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(`${server.base}/`);
    await page.waitForSelector('#state[data-state=connected]');
    await page.fill('#text', 'hi from the landing page');
    await page.click('#send button');
    await page.waitForFunction(() => document.querySelector('#log').textContent.includes('hi from the landing page'));
    await post(server.base, KEY, '/api/publish', { channel: 'lobby', type: 'chat', text: 'from the API' });
    await page.waitForFunction(() => document.querySelector('#log').textContent.includes('from the API'));
    const js = await fetch(`${server.base}/client.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
    const dts = await fetch(`${server.base}/client.d.ts`);
    assert.equal(dts.status, 200);
    await page.close();
  } finally {
    await server.stop();
  }
  const off = await startServer(['--pages=false']);
  try {
    for (const p of ['/', '/client.js', '/chat', '/dashboard', '/admin']) {
      assert.equal((await fetch(off.base + p)).status, 404, p);
    }
    // Nor is the dashboard's feed published.
    const ws = new WebSocket(`ws://127.0.0.1:${off.port}/ws`);
    const got = [];
    ws.on('message', (data) => got.push(JSON.parse(data.toString()).type));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.send(JSON.stringify({ type: 'join', room: 'switchboard:stats' }));
    await new Promise((r) => setTimeout(r, 1500));
    ws.terminate();
    assert.ok(got.includes('joined') && !got.includes('stats'), `no stats with pages off: ${got}`);
  } finally {
    await off.stop();
  }
});

/// `switchboard serve` on a fixed port (restartable there): {stop(signal)}.
async function serveOn(port, args) {
  const child = spawn(binary, ['serve', '--listen', `127.0.0.1:${port}`, ...args], { stdio: 'inherit' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await until(`switchboard on ${port}`, async () => {
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(() => true, () => false);
    return ok;
  }, 10_000);
  return {
    stop: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

test('a server restart while the page is open: every message once, in order', async () => {
  const redis = await startRedis();
  const port = await freePort();
  const args = ['--broker', redis.url, '--api-key', KEY];
  const base = `http://127.0.0.1:${port}`;
  let server = await serveOn(port, args);
  try {
    const page = await clientPage(base);
    await page.evaluate(() => window.c.join('feed'));
    const publish = (n) => post(base, KEY, '/api/publish', { channel: 'feed', data: { n } });
    for (let n = 1; n <= 5; n++) await publish(n);
    await waitIn(page, 'the first five', () => window.got.length >= 5);
    await server.stop('SIGKILL');
    await waitIn(page, 'reconnecting', () => window.states.some((s) => s.state === 'reconnecting'));
    server = await serveOn(port, args);
    // Published before the page is back: replayed on its rejoin.
    for (let n = 6; n <= 10; n++) await publish(n);
    await waitIn(page, 'ten messages', () => window.got.length >= 10);
    for (let n = 11; n <= 12; n++) await publish(n);
    await waitIn(page, 'twelve messages', () => window.got.length >= 12);
    await new Promise((r) => setTimeout(r, 300));
    const got = await page.evaluate(() => window.got.map((m) => m.data.n));
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.deepEqual(await page.evaluate(() => window.resyncs), []);
    await page.close();
  } finally {
    await server.stop();
    await redis.stop();
  }
});

test('the offline queue is bounded', async () => {
  const server = await startServer([]);
  const deadPort = await freePort();
  try {
    const page = await clientPage(server.base, { url: `ws://127.0.0.1:${deadPort}/ws`, offlineQueue: 3 });
    const codes = await page.evaluate(async () => {
      window.c.join('q').catch(() => {});
      window.c.publish('q', 1).catch(() => {});
      window.c.publish('q', 2).catch(() => {});
      const fourth = await window.c.publish('q', 3).then(() => 'sent', (e) => e.code);
      return { fourth, queued: window.c.queued };
    });
    assert.deepEqual(codes, { fourth: 'queue_full', queued: 3 });
    await page.close();
  } finally {
    await server.stop();
  }
});

test('client.js is smaller than socket.io-client', async () => {
  // What browsers get: /client.js as served (the source less its comment lines).
  const server = await startServer([]);
  let served;
  try {
    served = Buffer.from(await (await fetch(`${server.base}/client.js`)).arrayBuffer());
  } finally {
    await server.stop();
  }
  const gz = (bytes) => zlib.gzipSync(bytes, { level: 9 }).length;
  const ours = gz(served);
  const source = gz(fs.readFileSync(path.join(root, 'clients/browser/client.js')));
  const theirs = gz(fs.readFileSync(path.join(root, 'tests/interop/node/node_modules/socket.io-client/dist/socket.io.min.js')));
  console.log(`client.js gzipped: ${ours} B as served (${source} B with its comments); socket.io-client's socket.io.min.js gzipped: ${theirs} B (${(ours / theirs).toFixed(2)}×)`);
  assert.ok(ours < theirs, `${ours} B vs ${theirs} B`);
});

test('Redis loses a room under open pages: each transport resets its position and skips nothing new', async () => {
  const redis = await startRedis();
  const server = await startServer(['--api-key', KEY, '--broker', redis.url]);
  try {
    const pages = [];
    for (const transports of [['websocket'], ['sse'], ['poll']]) {
      const page = await clientPage(server.base, { transports });
      await page.evaluate(() => window.c.join('lost'));
      pages.push(page);
    }
    for (let n = 0; n < 3; n++) await post(server.base, KEY, '/api/publish', { channel: 'lost', type: 'tick', n });
    for (const page of pages) await waitIn(page, 'the first 3', () => window.got.length >= 3);
    // Redis restarted without persistence, as far as the room is concerned.
    const { execFileSync } = await import('node:child_process');
    execFileSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL']);
    for (let n = 3; n < 6; n++) await post(server.base, KEY, '/api/publish', { channel: 'lost', type: 'tick', n });
    for (const page of pages) {
      const transport = await page.evaluate(() => window.c.transport);
      await waitIn(page, `all 6 over ${transport}`, () => window.got.length >= 6);
      assert.deepEqual(await page.evaluate(() => window.got.map((m) => m.n)), [0, 1, 2, 3, 4, 5], transport);
      const resyncs = await page.evaluate(() => window.resyncs.map((r) => r.room));
      assert.deepEqual(resyncs, ['lost'], `${transport}: told once to reload the room`);
      await page.close();
    }
  } finally {
    await server.stop();
    await redis.stop();
  }
});
