// Interoperability with the `ws` npm package (a third-party client) against `switchboard serve --echo`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

let server;
let base;

before(async () => {
  server = await startServer(['--echo']);
  base = server.base.replace('http', 'ws');
});

after(async () => {
  await server?.stop();
});

function open(options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}/echo`, options);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function nextMessage(ws) {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })));
}

function closed(ws) {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

test('echo with permessage-deflate', async () => {
  const ws = await open({ perMessageDeflate: true });
  assert.match(ws.extensions, /permessage-deflate/);
  for (const msg of ['hello', 'Grüße '.repeat(5000)]) {
    ws.send(msg);
    const { data, isBinary } = await nextMessage(ws);
    assert.equal(isBinary, false);
    assert.equal(data.toString(), msg);
  }
  const bin = Buffer.alloc(70_000, 7);
  ws.send(bin);
  const { data, isBinary } = await nextMessage(ws);
  assert.equal(isBinary, true);
  assert.deepEqual(data, bin);
  ws.close(1000, 'done');
  assert.equal((await closed(ws)).code, 1000);
});

test('echo without compression keeps order under pipelining', async () => {
  const ws = await open({ perMessageDeflate: false });
  const got = [];
  const all = new Promise((resolve) => ws.on('message', (d) => { got.push(d.toString()); if (got.length === 1000) resolve(); }));
  for (let i = 0; i < 1000; i++) ws.send(`m${i}`);
  await all;
  assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => `m${i}`));
  ws.terminate();
});

test('client ping is answered with pong carrying the same payload', async () => {
  const ws = await open();
  const pong = new Promise((resolve) => ws.once('pong', resolve));
  ws.ping(Buffer.from('abc'));
  assert.equal((await pong).toString(), 'abc');
  ws.close();
  await closed(ws);
});

test('oversized message closes with 1009', async () => {
  const ws = await open({ perMessageDeflate: false, maxPayload: 0 });
  ws.send(Buffer.alloc(1024 * 1024 + 1));
  assert.equal((await closed(ws)).code, 1009);
});

test('handshake refusals surface as HTTP status', async () => {
  await assert.rejects(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`${base}/nope`);
      ws.once('open', resolve);
      ws.once('error', reject);
    }),
    /404/,
  );
});
