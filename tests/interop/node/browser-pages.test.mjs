// The pages `serve` ships (clients/browser/pages/), in headless Chromium: the demo chat
// (two pages chatting with presence, typing and display names; history for a page that
// opens later), the live dashboard (its numbers move when load runs; its cost on the
// server with the page open vs closed), the admin view (rooms, presence, disconnecting a
// user, behind the API key). Also the time from `serve` starting to the chat page showing
// its first message, and screenshots of the chat and the dashboard for the README
// (docs/img/, written on every run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { startServer, api as post, root, launchChromium } from './server.mjs';

const KEY = 'browser-pages-key';
const WAIT_MS = 15_000;
const SHOTS = path.join(root, 'docs/img');

let browser;

before(async () => {
  browser = await launchChromium();
  fs.mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

async function newPage(url, size = { width: 1100, height: 640 }) {
  const page = await browser.newPage({ viewport: size });
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(url);
  return page;
}

const text = (page, selector) => page.locator(selector).innerText();

/// CPU ticks (user + system) the process has used so far (Linux /proc).
function cpuTicks(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

test('the demo chat: two people chat with presence, typing, names; a later page gets the history', async () => {
  const started = Date.now();
  const server = await startServer(['--api-key', KEY]);
  try {
    const ada = await newPage(`${server.base}/chat?name=ada`);
    await ada.waitForSelector('#state[data-state=connected]');
    await ada.fill('#text', 'first!');
    await ada.press('#text', 'Enter');
    await ada.waitForFunction(() => document.querySelector('#log').textContent.includes('first!'));
    const firstMessageMs = Date.now() - started;
    console.log(`# chat page: first message shown ${firstMessageMs} ms after serve was started (server start + page load + connect + send)`);

    const bob = await newPage(`${server.base}/chat?name=bob`);
    await bob.waitForSelector('#state[data-state=connected]');
    // History on join: bob sees what ada wrote before he came.
    await bob.waitForFunction(() => document.querySelector('#log').textContent.includes('first!'));
    // Presence: each sees both names.
    for (const page of [ada, bob]) {
      await page.waitForFunction(() => {
        const people = document.querySelector('#people').textContent;
        return people.includes('ada') && people.includes('bob');
      });
    }
    // Typing: bob types, ada sees it (and bob does not see himself).
    await bob.type('#text', 'hello', { delay: 20 });
    await ada.waitForFunction(() => document.querySelector('#typing').textContent.includes('bob is typing'));
    assert.equal(await text(bob, '#typing'), '');
    await bob.press('#text', 'Enter');
    await ada.waitForFunction(() => document.querySelector('#log').textContent.includes('hello'));
    const line = await ada.locator('#log .msg').last().innerText();
    assert.match(line, /^bob\s*hello/);
    // A message from the backend reaches the room.
    await post(server.base, KEY, '/api/publish', { channel: 'chat:lobby', type: 'chat', text: 'from the backend', name: 'backend' });
    await bob.waitForFunction(() => document.querySelector('#log').textContent.includes('from the backend'));
    // Another room: unread mark in the list, its own log.
    await ada.fill('#newroom', 'dev');
    await ada.press('#newroom', 'Enter');
    await bob.fill('#newroom', 'dev');
    await bob.press('#newroom', 'Enter');
    await bob.click('#rooms button:has-text("lobby")');
    await ada.fill('#text', 'in dev');
    await ada.press('#text', 'Enter');
    await bob.waitForSelector('#rooms button.unread:has-text("dev")');
    assert.ok(!(await text(bob, '#log')).includes('in dev'), 'dev messages stay in dev');
    // The visible reconnecting state: the server goes away.
    await bob.click('#rooms button:has-text("lobby")');
    await ada.click('#rooms button:has-text("lobby")');
    await ada.screenshot({ path: path.join(SHOTS, 'chat.png') });
    await server.stop();
    await ada.waitForSelector('#state[data-state=reconnecting]');
    await ada.close();
    await bob.close();
  } finally {
    await server.stop();
  }
});

test('the dashboard moves with load, and costs little while open', async () => {
  const server = await startServer(['--api-key', KEY]);
  const sockets = [];
  try {
    // Closed: the server's CPU over 4 s with no dashboard.
    const idleBefore = cpuTicks(server.pid);
    await new Promise((r) => setTimeout(r, 4000));
    const closedTicks = cpuTicks(server.pid) - idleBefore;

    const page = await newPage(`${server.base}/dashboard`, { width: 1200, height: 760 });
    await page.waitForSelector('#state[data-state=connected]');
    await page.waitForFunction(() => window.snapshots.length >= 1);
    const openBefore = cpuTicks(server.pid);
    await new Promise((r) => setTimeout(r, 4000));
    const openTicks = cpuTicks(server.pid) - openBefore;
    console.log(`# dashboard cost: server CPU over 4 s ${closedTicks} ticks closed, ${openTicks} ticks open (1 tick = 10 ms)`);
    assert.ok(openTicks <= closedTicks + 25, `the dashboard costs at most 0.25 s of CPU in 4 s (${openTicks} vs ${closedTicks})`);
    const quiet = await page.evaluate(() => window.snapshots.at(-1));
    assert.equal(quiet.connections.websocket, 1, 'the dashboard itself');

    // Load: 20 WebSocket subscribers of one room, the API publishing to it.
    for (let i = 0; i < 20; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
      await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
      ws.send(JSON.stringify({ type: 'join', room: 'load' }));
      sockets.push(ws);
    }
    // 8 s of publishing at a rate that steps up each second (a chart worth a screenshot).
    const start = Date.now();
    let n = 0;
    while (Date.now() - start < 8000) {
      const second = Math.floor((Date.now() - start) / 1000);
      await post(server.base, KEY, '/api/publish', { channel: 'load', type: 'tick', n: n++ });
      if (second < 7) await new Promise((r) => setTimeout(r, 7 - second));
    }
    await page.waitForFunction(() => {
      const s = window.snapshots.at(-1);
      return s.connections.websocket >= 21 && s.messagesOut > 100 && s.rooms >= 2;
    });
    const loaded = await page.evaluate(() => window.snapshots.at(-1));
    assert.ok(loaded.latencyMs.samples > 0 && loaded.latencyMs.p50 > 0, `latency measured: ${JSON.stringify(loaded.latencyMs)}`);
    assert.ok(loaded.memoryBytes > 1_000_000);
    assert.notEqual(await text(page, '#tile-out'), '0');
    await page.screenshot({ path: path.join(SHOTS, 'dashboard.png') });

    // Clients may not publish into the server's own rooms.
    const refused = await page.evaluate(() => window.sb.send('switchboard:stats', 'stats', { rooms: 1e9 }).then(() => 'published', (e) => e.code));
    assert.equal(refused, 'forbidden');
    const http = await fetch(`${server.base}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'switchboard:stats', type: 'stats' }),
    });
    assert.ok(http.status === 401 || http.status === 403, `anonymous HTTP publish refused (${http.status})`);
    await page.close();
  } finally {
    for (const ws of sockets) ws.terminate();
    await server.stop();
  }
});

test('the admin view: rooms and presence behind the API key; disconnecting a user', async () => {
  const server = await startServer(['--api-key', KEY]);
  try {
    const chat = await newPage(`${server.base}/chat?name=mallory`);
    await chat.waitForSelector('#state[data-state=connected]');
    const admin = await newPage(`${server.base}/admin`);
    // Without the key: the API's refusal is shown, nothing listed.
    await admin.fill('#key', 'wrong-key');
    await admin.click('#login button');
    await admin.waitForFunction(() => document.querySelector('#error').textContent.includes('invalid API key'));
    assert.equal(await admin.locator('#rooms tr').count(), 0);
    await admin.fill('#key', KEY);
    await admin.click('#login button');
    await admin.waitForSelector('#rooms tr[data-room="chat:lobby"]');
    await admin.click('#rooms tr[data-room="chat:lobby"]');
    await admin.waitForFunction(() => document.querySelector('#members').textContent.includes('mallory'));
    const userId = await chat.evaluate(() => window.sb.userId);
    admin.on('dialog', (d) => d.accept());
    await admin.click(`#members tr[data-user="${userId}"] button`);
    await admin.waitForFunction(() => document.querySelector('#error').textContent.includes('1 connection(s) closed'));
    // The server's disconnect is final for the client (close 1008: it stays closed).
    await chat.waitForSelector('#state[data-state=closed]');
    await chat.close();
    await admin.close();
  } finally {
    await server.stop();
  }
});
