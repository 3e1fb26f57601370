// Socket.IO authentication through the shared auth layer, with the official
// socket.io-client: `auth: {token}` (the seeds' way), the handshake's `Authorization`
// header, refusals as `connect_error` "Authentication failed" (the message the seeds'
// clients test for), and channel permissions on joins and relayed events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { io } from 'socket.io-client';
import { startServer } from './server.mjs';

const SECRET = 'socketio-interop-secret-of-enough-length-01';

function token(sub, ttl = 60, secret = SECRET, extra = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttl, ...extra })}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}

let server;

before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-sio-auth-'));
  const config = path.join(dir, 'switchboard.toml');
  fs.writeFileSync(config, [
    '[auth.jwt]',
    `secrets = ["${SECRET}"]`,
    '[[auth.permissions]]',
    'rooms = "user:*"',
    'allow = { match = "user:{sub}" }',
    '[[auth.permissions]]',
    'rooms = "vip:*"',
    'allow = "channels"',
    '',
  ].join('\n'));
  server = await startServer(['--config', config]);
});

after(async () => {
  await server?.stop();
});

const opened = [];

/// Resolves with the socket once connected, rejects with the connect_error.
function connect(nsp, options) {
  const socket = io(`${server.base}${nsp}`, { transports: ['websocket'], reconnection: false, forceNew: true, ...options });
  opened.push(socket);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

test('auth.token: a valid token connects as its user, a bad one is refused', async () => {
  const alice = await connect('/chat', { auth: { token: token('alice') } });
  assert.deepEqual(await alice.emitWithAck('join_room', 'general'), { status: 'ok', room: 'general' });
  const stamped = new Promise((resolve) => alice.once('chat_message', resolve));
  await alice.emitWithAck('chat_message', { room: 'general', message: 'hi' });
  assert.equal((await stamped).userId, 'alice');
  for (const bad of [token('mallory', 60, 'another-secret-of-enough-length-0123456'), 'not-a-jwt', token('late', -120)]) {
    await assert.rejects(connect('/chat', { auth: { token: bad } }), (e) => e.message === 'Authentication failed');
  }
  // No credential at all, with a verifier configured: refused too.
  await assert.rejects(connect('/', {}), (e) => e.message === 'Authentication failed');
});

test('the handshake Authorization header is a credential too', async () => {
  const bob = await connect('/', { extraHeaders: { authorization: `Bearer ${token('bob')}` } });
  const stamped = new Promise((resolve) => bob.once('note', resolve));
  await bob.emitWithAck('join_room', 'general');
  await bob.emitWithAck('note', { room: 'general' });
  assert.equal((await stamped).userId, 'bob');
  await assert.rejects(
    connect('/', { extraHeaders: { authorization: 'Bearer nope' } }),
    (e) => e.message === 'Authentication failed',
  );
});

test('channel permissions apply to joins and relayed events', async () => {
  const alice = await connect('/', { auth: { token: token('alice') } });
  assert.deepEqual(await alice.emitWithAck('join_room', 'user:alice'), { status: 'ok', room: 'user:alice' });
  const refused = await alice.emitWithAck('join_room', 'user:bob');
  assert.equal(refused.status, 'error');
  assert.equal(refused.code, 'forbidden');
  const relay = await alice.emitWithAck('chat', { room: 'user:bob', text: 'x' });
  assert.equal(relay.status, 'error');
  assert.ok(alice.connected, 'refusals keep the connection');
  for (const s of opened.splice(0)) s.close();
});

test('a recovery whose rooms are no longer permitted is answered at once, as a new socket', async () => {
  const gold = token('dana', 60, SECRET, { channels: ['vip:gold'] });
  const socket = io(server.base, { transports: ['websocket'], forceNew: true, reconnectionDelay: 50, reconnectionDelayMax: 100, auth: { token: gold } });
  opened.push(socket);
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
  assert.deepEqual(await socket.emitWithAck('join_room', 'vip:gold'), { status: 'ok', room: 'vip:gold' });
  const id = socket.id;
  // The same user comes back with a token that no longer grants the room.
  socket.auth = { token: token('dana', 60, SECRET, { channels: [] }) };
  const reconnected = new Promise((resolve) => socket.once('connect', resolve));
  socket.io.engine.close();
  const started = Date.now();
  await reconnected;
  assert.ok(Date.now() - started < 3000, 'the CONNECT was answered without waiting');
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, id);
  socket.close();
});
