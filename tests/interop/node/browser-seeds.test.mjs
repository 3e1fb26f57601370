// Pages built only from the seeds' client code, in headless Chromium against the server
// that serves /client.js: seed 000's `WebSocketClient` class (read verbatim from the guide in
// ../shared/seeds at test time, not a copy) subscribes with the envelope `send('subscribe',
// {channel})` and gets `order_update` payloads through its `on(type)` listeners; seed
// 003's `EventSource` pattern (`addEventListener('notification' | 'update')`) gets the same
// room's events. A page on /client.js publishes in that room, the backend too: all three
// clients meet there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, api as post, root, launchChromium } from './server.mjs';

const KEY = 'browser-seeds-key';
const WAIT_MS = 15_000;
const SEEDS = path.join(root, '../shared/seeds');

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

/// Seed 000's `WebSocketClient` class, as the guide prints it.
function seedWebSocketClient() {
  const file = fs.readdirSync(SEEDS).find((f) => f.startsWith('000_'));
  assert.ok(file, `seed 000 in ${SEEDS}`);
  const text = fs.readFileSync(path.join(SEEDS, file), 'utf8');
  const start = text.indexOf('class WebSocketClient {');
  const end = text.indexOf('\n}\n', start);
  assert.ok(start >= 0 && end > start, 'the guide defines class WebSocketClient');
  return text.slice(start, end + 2);
}

test("seed 000's WebSocketClient and seed 003's EventSource pattern, in one room with /client.js", async () => {
  const server = await startServer(['--api-key', KEY]);
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('pageerror', (e) => console.error('page error:', e));
    await page.goto(`${server.base}/health`);
    await page.addScriptTag({ content: `${seedWebSocketClient()}\nwindow.WebSocketClient = WebSocketClient;` });
    await page.evaluate((url) => {
      // The guide's usage, with this server's address.
      window.orders = [];
      window.notifications = [];
      window.updates = [];
      const client = new window.WebSocketClient(url);
      window.client = client;
      client.on('connected', () => { window.ready = true; });
      client.on('order_update', (order) => window.orders.push(order));
      client.send('subscribe', { channel: 'orders' });
      // Seed 003's EventSource pattern, on the same room.
      const eventSource = new EventSource('/events?channels=orders');
      eventSource.addEventListener('notification', (event) => window.notifications.push(JSON.parse(event.data)));
      eventSource.addEventListener('update', (event) => window.updates.push(JSON.parse(event.data)));
      eventSource.addEventListener('open', () => { window.streamOpen = true; });
    }, `ws://127.0.0.1:${server.port}/ws`);
    await page.waitForFunction(() => window.ready && window.streamOpen);
    // The subscribe envelope is a join: wait until the server has the member, then publish.
    const joined = async () => {
      const r = await fetch(`${server.base}/api/presence?channel=orders`, { headers: { authorization: `Bearer ${KEY}` } });
      return (await r.json()).members.length >= 2;
    };
    for (let i = 0; i < 100 && !(await joined()); i++) await new Promise((r) => setTimeout(r, 50));
    await post(server.base, KEY, '/api/publish', { channel: 'orders', type: 'order_update', payload: { id: 7, status: 'shipped' } });
    await post(server.base, KEY, '/api/publish', { channel: 'orders', type: 'notification', payload: { text: 'ready' } });
    // A /client.js page publishes into the same room.
    const other = await browser.newPage();
    other.setDefaultTimeout(WAIT_MS);
    await other.goto(`${server.base}/health`);
    await other.evaluate(async () => {
      const { SwitchboardClient } = await import('/client.js');
      const c = new SwitchboardClient();
      await c.join('orders');
      await c.send('orders', 'update', { payload: { progress: 50 } });
      await c.send('orders', 'order_update', { payload: { id: 8, status: 'packed' } });
    });
    await page.waitForFunction(() => window.orders.length >= 2 && window.notifications.length >= 1 && window.updates.length >= 1);
    const seen = await page.evaluate(() => ({ orders: window.orders, notifications: window.notifications, updates: window.updates }));
    // The seed reads `data.payload`: exactly what was sent, by the backend and by /client.js.
    assert.deepEqual(seen.orders, [{ id: 7, status: 'shipped' }, { id: 8, status: 'packed' }]);
    assert.deepEqual(seen.notifications[0].payload, { text: 'ready' });
    assert.equal(seen.notifications[0].room, 'orders');
    assert.deepEqual(seen.updates[0].payload, { progress: 50 });
    await page.evaluate(() => window.client.close());
    await page.close();
    await other.close();
  } finally {
    await server.stop();
  }
});
