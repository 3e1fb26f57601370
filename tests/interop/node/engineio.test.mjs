// Engine.IO v4 with the official `engine.io-client` against the raw echo endpoint of
// `--echo` (`/engine.io/`): text stays text and binary stays binary on WebSocket only, on
// polling only, and across the polling → WebSocket upgrade.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Socket } from 'engine.io-client';
import { startServer } from './server.mjs';

let server;

before(async () => {
  server = await startServer(['--echo']);
});

after(async () => {
  await server?.stop();
});

/// Open a client, send `messages` (after the upgrade when `upgrade`), and collect the echoes.
async function echo(transports, messages, { upgrade = false } = {}) {
  const socket = new Socket(`ws://127.0.0.1:${server.port}`, {
    path: '/engine.io/',
    transports,
    upgrade,
  });
  const received = [];
  const transportsSeen = new Set();
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out; got ${received.length}`)), 10_000);
    socket.on('message', (data) => {
      // (The client's parser gives an empty message as `undefined`.)
      if (data === undefined) received.push('(empty)');
      else if (typeof data === 'string') received.push(data.length > 100 ? `${data.length} chars` : data);
      else received.push([...new Uint8Array(data)]);
      transportsSeen.add(socket.transport.name);
      if (received.length === messages.length) {
        clearTimeout(timer);
        resolve();
      }
    });
    socket.on('error', reject);
  });
  await new Promise((resolve) => socket.on('open', resolve));
  if (upgrade) await new Promise((resolve) => socket.on('upgrade', resolve));
  for (const m of messages) socket.send(m);
  await done;
  const closed = new Promise((resolve) => socket.on('close', (reason) => resolve(reason)));
  socket.close();
  assert.equal(await closed, 'forced close');
  return { received, transportsSeen: [...transportsSeen] };
}

const MESSAGES = ['hello', new Uint8Array([1, 2, 3, 255]), 'é ✓ 😀', '', 'x'.repeat(100_000)];
const EXPECTED = ['hello', [1, 2, 3, 255], 'é ✓ 😀', '(empty)', '100000 chars'];

test('websocket only: every message comes back as it was sent', async () => {
  const { received, transportsSeen } = await echo(['websocket'], MESSAGES);
  assert.deepEqual(received, EXPECTED);
  assert.deepEqual(transportsSeen, ['websocket']);
});

test('polling only: every message comes back as it was sent', async () => {
  const { received, transportsSeen } = await echo(['polling'], MESSAGES);
  assert.deepEqual(received, EXPECTED);
  assert.deepEqual(transportsSeen, ['polling']);
});

test('polling upgraded to websocket: the echoes come on the websocket', async () => {
  const { received, transportsSeen } = await echo(['polling', 'websocket'], MESSAGES, { upgrade: true });
  assert.deepEqual(received, EXPECTED);
  assert.deepEqual(transportsSeen, ['websocket']);
});

test('handshake over polling: exactly the announced keys and defaults', async () => {
  const res = await fetch(`${server.base}/engine.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/plain/);
  const body = await res.text();
  assert.equal(body[0], '0');
  const open = JSON.parse(body.slice(1));
  assert.deepEqual(Object.keys(open), ['sid', 'upgrades', 'pingInterval', 'pingTimeout', 'maxPayload']);
  assert.deepEqual(open.upgrades, ['websocket']);
  assert.equal(open.pingInterval, 25000);
  assert.equal(open.pingTimeout, 20000);
  assert.equal(open.maxPayload, 1000000);
});

test('refused requests: the reference server\'s status and JSON errors', async () => {
  const get = async (query, init) => {
    const res = await fetch(`${server.base}/engine.io/?${query}`, init);
    return { status: res.status, body: await res.text() };
  };
  assert.deepEqual(await get('EIO=3&transport=polling'), {
    status: 400, body: '{"code":5,"message":"Unsupported protocol version"}',
  });
  assert.deepEqual(await get('EIO=4&transport=carrier-pigeon'), {
    status: 400, body: '{"code":0,"message":"Transport unknown"}',
  });
  assert.deepEqual(await get('EIO=4&transport=polling&sid=nope'), {
    status: 400, body: '{"code":1,"message":"Session ID unknown"}',
  });
  // A second GET while one is held closes the session; the held one gets the close packet.
  const open = JSON.parse((await get('EIO=4&transport=polling')).body.slice(1));
  const held = get(`EIO=4&transport=polling&sid=${open.sid}`);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await get(`EIO=4&transport=polling&sid=${open.sid}`), {
    status: 400, body: '{"code":3,"message":"Bad request"}',
  });
  assert.deepEqual(await held, { status: 200, body: '1' });
  assert.deepEqual(await get(`EIO=4&transport=polling&sid=${open.sid}`), {
    status: 400, body: '{"code":1,"message":"Session ID unknown"}',
  });
  // A POST body that is not a payload closes the session.
  const other = JSON.parse((await get('EIO=4&transport=polling')).body.slice(1));
  const bad = await get(`EIO=4&transport=polling&sid=${other.sid}`, { method: 'POST', body: '9nonsense' });
  assert.equal(bad.status, 400);
  assert.equal((await get(`EIO=4&transport=polling&sid=${other.sid}`)).status, 400);
});
