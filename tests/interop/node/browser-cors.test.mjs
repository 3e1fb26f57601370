// A page of another site in a real browser (headless Chromium via playwright-core): its
// EventSource, long polls and anonymous publishes reach the server across origins when the
// page's origin is in `cors_origins` (preflight included), and are refused by the browser
// when it is not. The page is served by the server at http://localhost:PORT; the requests go
// to http://127.0.0.1:PORT — another origin for the browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const WAIT_MS = 10_000;
const KEY = 'browser-cors-key';

let open;   // a server that lists the page's origin
let closed; // a server with no CORS origin
let browser;
let page;

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/test.sh does), or set CHROMIUM_BIN`);
  }
  open = await startServer((port) => [
    '--cors-origin', `http://localhost:${port}`, '--anonymous-publish', 'chat:*', '--poll-timeout', '5s',
  ]);
  closed = await startServer(['--anonymous-publish', 'chat:*', '--api-key', KEY]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 30_000 });
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`http://localhost:${open.port}/health`);
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    await Promise.all([open?.stop(), closed?.stop()]);
  }
});

test('a listed origin streams, polls and publishes across sites', async () => {
  const target = `http://127.0.0.1:${open.port}`;
  const result = await page.evaluate(async ({ target, waitMs }) => {
    const within = (promise, what) => Promise.race([
      promise,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), waitMs)),
    ]);
    // The stream, with credentials (a listed origin may send cookies).
    const source = new EventSource(`${target}/events?channels=chat:room`, { withCredentials: true });
    const events = [];
    const chat = new Promise((resolve) => source.addEventListener('chat', (e) => resolve(JSON.parse(e.data))));
    await within(new Promise((resolve, reject) => {
      source.addEventListener('connected', (e) => { events.push(JSON.parse(e.data)); resolve(); });
      source.onerror = () => reject(new Error('EventSource error'));
    }), 'connected');
    // A long poll: the first answer carries the cursor.
    const first = await (await fetch(`${target}/poll?channels=chat:room`)).json();
    const held = fetch(`${target}/poll?channels=chat:room&cursor=${encodeURIComponent(first.cursor)}`)
      .then((r) => r.json());
    // JSON content type: the browser sends a preflight first.
    const published = await fetch(`${target}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'chat:room', type: 'chat', text: 'hello across sites' }),
    });
    const refused = await fetch(`${target}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'orders', type: 'chat', text: 'no' }),
    });
    const streamed = await within(chat, 'chat event');
    const polled = await within(held, 'held poll');
    source.close();
    return {
      connected: events[0],
      firstPoll: first.messages.map((m) => m.type),
      publishStatus: published.status,
      publishAnswer: await published.json(),
      refusedStatus: refused.status,
      refusedError: (await refused.json()).error,
      streamed,
      polled: polled.messages,
    };
  }, { target, waitMs: WAIT_MS });
  assert.equal(result.connected.type, 'connected');
  assert.deepEqual(result.connected.channels, ['chat:room']);
  assert.deepEqual(result.firstPoll, ['connected']);
  assert.equal(result.publishStatus, 200);
  assert.equal(result.refusedStatus, 403, 'the error is readable across sites too');
  assert.match(result.refusedError, /anonymous users may not publish/);
  for (const message of [result.streamed, ...result.polled]) {
    assert.equal(message.type, 'chat');
    assert.equal(message.text, 'hello across sites');
    assert.equal(message.userId, 'anonymous');
    assert.equal(message.offset, result.publishAnswer.offset);
  }
  assert.equal(result.polled.length, 1);
});

test('an origin that is not listed is refused by the browser', async () => {
  const target = `http://127.0.0.1:${closed.port}`;
  const result = await page.evaluate(async ({ target, waitMs }) => {
    const outcome = (promise) => promise.then(() => 'ok', (e) => e.name);
    const poll = await outcome(fetch(`${target}/poll?channels=chat:room`));
    const publish = await outcome(fetch(`${target}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'chat:room', type: 'chat', text: 'blocked' }),
    }));
    const stream = await new Promise((resolve) => {
      const source = new EventSource(`${target}/events?channels=chat:room`);
      const timer = setTimeout(() => { source.close(); resolve('no answer'); }, waitMs);
      source.addEventListener('connected', () => { clearTimeout(timer); source.close(); resolve('connected'); });
      source.onerror = () => { clearTimeout(timer); source.close(); resolve('error'); };
    });
    return { poll, publish, stream };
  }, { target, waitMs: WAIT_MS });
  assert.deepEqual(result, { poll: 'TypeError', publish: 'TypeError', stream: 'error' });
  // The preflight was refused, so the POST was never sent: nothing was published.
  const history = await fetch(`http://127.0.0.1:${closed.port}/api/history?channel=chat:room`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(history.status, 200);
  assert.deepEqual((await history.json()).messages, []);
});
