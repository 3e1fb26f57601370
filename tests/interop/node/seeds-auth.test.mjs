// The three client patterns of the seeds' "Authentication with WebSocket" chapter
// (seeds/000), run as the guide writes them against `/ws`, with the `ws` package standing in
// for the browser's WebSocket: the token in the query string, the first-message `auth`, and
// the session cookie the browser sends with the upgrade. Tokens are HS256 JWTs made here
// with node:crypto (an implementation independent of the server's).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const SECRET = 'node-interop-secret-of-enough-length-0123';

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

/// An HS256 JWT for `sub`, valid `ttl` seconds.
function makeToken(sub, ttl = 60) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ sub, iat: now, exp: now + ttl }));
  const signature = crypto.createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

let server;
let wsUrl;

before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-auth-'));
  const config = path.join(dir, 'switchboard.toml');
  fs.writeFileSync(config, `[auth.jwt]\nsecrets = ["${SECRET}"]\n`);
  server = await startServer(['--config', config]);
  wsUrl = `${server.base.replace('http', 'ws')}/ws`;
});

after(async () => {
  await server?.stop();
});

/// Resolves with the first message of `type` on `ws`, or rejects when the socket closes.
function first(ws, type) {
  return new Promise((resolve, reject) => {
    ws.addEventListener('message', (event) => {
      const data = JSON.parse(event.data);
      if (data.type === type) resolve(data);
    });
    ws.addEventListener('close', (event) => reject(new Error(`closed ${event.code} ${event.reason}`)));
  });
}

function closed(ws) {
  return new Promise((resolve) => ws.addEventListener('close', (e) => resolve([e.code, e.reason])));
}

test('approach 1: the token as a query parameter', async () => {
  const getAccessToken = () => makeToken('alice');
  // The guide's client line:
  const token = getAccessToken();
  const ws = new WebSocket(`${wsUrl}?token=${token}`);
  const welcome = await first(ws, 'welcome');
  assert.equal(welcome.userId, 'alice');
  ws.close();

  const bad = new WebSocket(`${wsUrl}?token=${token}tampered`);
  assert.deepEqual(await closed(bad), [4001, 'Invalid token']);
});

test('approach 2: first-message authentication, messages before it held', async () => {
  const getAccessToken = () => makeToken('bob');
  // The guide's client, as written (the URL is ours):
  const ws = new WebSocket(wsUrl);
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: 'auth',
      token: getAccessToken(),
    }));
  };
  const subscribed = new Promise((resolve, reject) => {
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (data.type === 'auth_success') {
        console.log('Authenticated, subscribing to channels...');
        ws.send(JSON.stringify({ type: 'subscribe', channel: 'updates' }));
      }
      if (data.type === 'joined') resolve(data);
    };
    ws.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
  });
  const joined = await subscribed;
  assert.equal(joined.room, 'updates');
  ws.close();

  // A bad token: 4001 "Invalid token", as the guide's server does.
  const bad = new WebSocket(wsUrl);
  bad.onopen = () => bad.send(JSON.stringify({ type: 'auth', token: 'not-a-token' }));
  assert.deepEqual(await closed(bad), [4001, 'Invalid token']);
});

test('approach 3: the session cookie sent with the upgrade', async () => {
  const ws = new WebSocket(wsUrl, { headers: { Cookie: `session=${makeToken('carol')}` } });
  const welcome = await first(ws, 'welcome');
  assert.equal(welcome.userId, 'carol');
  ws.close();
});
