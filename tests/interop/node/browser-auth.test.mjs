// Authentication in a real browser (headless Chromium via playwright-core): the seeds'
// cookie pattern — the browser sends the `session` cookie with the WebSocket upgrade and
// with its EventSource, the page never touches the token — and the first-message pattern
// from a page; a page of another origin is refused before the upgrade (403: the browser
// reports a failed connection). Tokens are HS256 JWTs made here with node:crypto.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const WAIT_MS = 10_000;
const SECRET = 'browser-auth-secret-of-enough-length-0123';

function makeToken(sub, ttl = 300) {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ sub, iat: now, exp: now + ttl })}`;
  return `${body}.${crypto.createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

let server;
let browser;

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/test.sh does), or set CHROMIUM_BIN`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-browser-auth-'));
  const config = path.join(dir, 'switchboard.toml');
  // Only the server's own origin may open connections (same-origin is always allowed).
  fs.writeFileSync(config, `[auth]\nallowed_origins = ["https://app.example.com"]\n[auth.jwt]\nsecrets = ["${SECRET}"]\n`);
  server = await startServer(['--config', config]);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 30_000 });
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
});

/// A page at `origin` (one of the server's own URLs), with `cookies` set for 127.0.0.1.
async function pageAt(origin, cookies = []) {
  const context = await browser.newContext();
  if (cookies.length) await context.addCookies(cookies);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`${origin}/health`);
  return page;
}

test('the session cookie authenticates the WebSocket and the EventSource', async () => {
  const origin = `http://127.0.0.1:${server.port}`;
  const page = await pageAt(origin, [{ name: 'session', value: makeToken('nina'), url: origin }]);
  const result = await page.evaluate(async (waitMs) => {
    const within = (p, what) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), waitMs))]);
    const ws = new WebSocket(`ws://${location.host}/ws`);
    const welcome = await within(new Promise((resolve, reject) => {
      ws.onmessage = (e) => resolve(JSON.parse(e.data));
      ws.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
    }), 'welcome');
    ws.close();
    const source = new EventSource('/events?channels=news');
    const connected = await within(new Promise((resolve, reject) => {
      source.addEventListener('connected', (e) => resolve(JSON.parse(e.data)));
      source.onerror = () => reject(new Error('EventSource error'));
    }), 'connected');
    source.close();
    return { welcome, connected };
  }, WAIT_MS);
  assert.equal(result.welcome.type, 'welcome');
  assert.equal(result.welcome.userId, 'nina');
  assert.equal(result.connected.userId, 'nina');
});

test('without a cookie: the first message authenticates, a bad token closes 4001', async () => {
  const origin = `http://127.0.0.1:${server.port}`;
  const page = await pageAt(origin);
  const result = await page.evaluate(async ({ good, waitMs }) => {
    const within = (p, what) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), waitMs))]);
    const session = (token) => new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
      ws.onmessage = (e) => { const m = JSON.parse(e.data); ws.close(); resolve(m); };
      ws.onclose = (e) => resolve({ closed: e.code, reason: e.reason });
    });
    return { ok: await within(session(good), 'auth_success'), bad: await within(session('forged'), 'close') };
  }, { good: makeToken('omar'), waitMs: WAIT_MS });
  assert.deepEqual([result.ok.type, result.ok.userId], ['auth_success', 'omar']);
  assert.deepEqual(result.bad, { closed: 4001, reason: 'Invalid token' });
});

test('a page of an unlisted origin is refused before the upgrade', async () => {
  // http://localhost:PORT is another origin than http://127.0.0.1:PORT, and not listed.
  const page = await pageAt(`http://localhost:${server.port}`);
  const result = await page.evaluate(async ({ target, token, waitMs }) => {
    const ws = new WebSocket(`${target}/ws?token=${token}`);
    return Promise.race([
      new Promise((resolve) => {
        ws.onmessage = (e) => resolve({ message: JSON.parse(e.data) });
        ws.onclose = (e) => resolve({ closed: e.code });
      }),
      new Promise((resolve) => setTimeout(() => resolve({ timeout: true }), waitMs)),
    ]);
  }, { target: `ws://127.0.0.1:${server.port}`, token: makeToken('pia'), waitMs: WAIT_MS });
  // A refused upgrade reaches a page as 1006 (the browser hides the 403).
  assert.deepEqual(result, { closed: 1006 });
});
