// The switchboard server under test, shared by the interop tests: start the release binary
// on a free loopback port, wait until it accepts connections, stop it with SIGTERM (it must
// exit 0); and the HTTP API helper.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const binary = process.env.SWITCHBOARD_BIN ?? path.join(root, 'target/release/switchboard');

/// A loopback port nothing listens on right now.
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
    c.on('error', () => resolve(false));
  });
}

/// `switchboard serve --listen 127.0.0.1:PORT ...args`, once it accepts connections (`args`
/// may be a function of the port, for flags that name the server's own address).
/// Returns {base: 'http://127.0.0.1:PORT', port, stop()}; stop() sends SIGTERM and asserts
/// the server exits 0 (SIGKILL and an error after 10 s).
export async function startServer(args = []) {
  return startProgram(binary, 'cargo build --release -p switchboard, or set SWITCHBOARD_BIN', (port) => {
    const flags = typeof args === 'function' ? args(port) : args;
    return ['serve', '--listen', `127.0.0.1:${port}`, ...flags];
  });
}

/// Any server program: `argvOf(port)` gives its arguments for a free loopback port; the same
/// startup wait and SIGTERM stop as [startServer]. `build` says how to build it when missing.
export async function startProgram(program, build, argvOf) {
  try {
    fs.accessSync(program, fs.constants.X_OK);
  } catch {
    throw new Error(`no executable at ${program}: build it (${build})`);
  }
  const port = await freePort();
  const child = spawn(program, argvOf(port), { stdio: 'inherit' });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let spawnError;
  child.on('error', (e) => { spawnError = e; });
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (spawnError) throw new Error(`switchboard did not start: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`switchboard exited during startup (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`switchboard did not accept connections on port ${port} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  let stopped;
  return {
    port,
    pid: child.pid,
    base: `http://127.0.0.1:${port}`,
    /// SIGTERM; the server must exit 0 within 10 s. Idempotent.
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        let timer;
        const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), 10_000); });
        const result = await Promise.race([exited, timeout]);
        clearTimeout(timer);
        if (result === null) {
          child.kill('SIGKILL');
          await exited;
          throw new Error('switchboard did not exit within 10 s of SIGTERM (killed)');
        }
        assert.deepEqual(result, { code: 0, signal: null }, 'server exits 0 on SIGTERM');
      })();
      return stopped;
    },
  };
}

/// `POST base+route` with a JSON body and the API key; asserts 200 and returns the JSON answer.
export async function api(base, key, route, body) {
  const res = await fetch(base + route, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200, `${route}: ${await res.clone().text()}`);
  return res.json();
}

/// The arguments of the next `event` on an event emitter (a socket.io-client socket), or an
/// error after `ms`.
export function nextEvent(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/// Resolves once `check()` (sync or async) is true; fails after `ms` (5 s) naming `what`.
export async function until(what, check, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/// A real `redis-server` on a free loopback port (or `port`), without persistence: {port, url,
/// stop()}. Fails loudly when the binary is missing (scripts/test.sh installs it).
export async function startRedis(port) {
  port ??= await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  let spawnError;
  child.on('error', (e) => { spawnError = e; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (spawnError) throw new Error(`redis-server is required (scripts/test.sh installs it): ${spawnError.message}`);
    if (await accepts(port)) break;
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    port,
    url: `redis://127.0.0.1:${port}/`,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/// A Redis Cluster of three masters (no replicas) on loopback: three cluster-enabled
/// `redis-server`s in a scratch directory, joined by `redis-cli --cluster create`, ready once
/// every node says `cluster_state:ok`. `url` is the broker URL (`redis+cluster://…`);
/// `cli(i, …args)` runs `redis-cli` against node i.
export async function startRedisCluster() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-cluster-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const children = ports.map((port) => {
    const nodeDir = path.join(dir, String(port));
    fs.mkdirSync(nodeDir);
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
      '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'no'],
    { cwd: nodeDir, stdio: 'ignore' });
    child.exited = new Promise((resolve) => child.on('exit', resolve));
    return child;
  });
  const stop = async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 20_000;
    for (const port of ports) {
      while (!(await accepts(port))) {
        if (Date.now() > deadline) throw new Error('redis-server did not start (scripts/test.sh installs it)');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const cli = (i, ...args) => execFileSync('redis-cli', ['-p', String(ports[i]), ...args], { encoding: 'utf8' });
    const created = execFileSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    assert.match(created, /All 16384 slots covered/);
    for (let i = 0; i < ports.length; i++) {
      while (!cli(i, 'CLUSTER', 'INFO').includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error('the Redis Cluster did not form');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return { ports, url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, cli, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/// An HS256 JWT for `sub`, signed with `secret`, valid for `ttl` seconds.
export function jwt(secret, sub, ttl = 600) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttl })}`;
  return `${unsigned}.${crypto.createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/// A native WebSocket member of `room` that reconnects whenever it is cut (to `url(attempt)`,
/// asked again for every attempt, with the `ws` `options`) and resumes from the last offset
/// it got (`join … since`); a `recovered: false` answer moves its position to the room's.
/// Every message but `joined` goes to `onMessage(member, message)`; `onJoined(member)` runs
/// after each `joined`. Returns the member: {joins, send(message), close()}.
export function resumingMember({ url, room, options = {}, onMessage = () => {}, onJoined = () => {} }) {
  const c = { joins: [], offset: 0, epoch: null, closed: false, ws: null };
  let attempt = 0;
  const open = () => {
    if (c.closed) return;
    const ws = new WebSocket(url(attempt), options);
    attempt += 1;
    c.ws = ws;
    ws.on('open', () => {
      const join = { type: 'join', room };
      if (c.epoch) join.since = { offset: c.offset, epoch: c.epoch };
      ws.send(JSON.stringify(join));
    });
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === 'joined') {
        c.joins.push(m);
        if (!m.recovered || !c.epoch) {
          c.epoch = m.epoch;
          c.offset = m.offset;
        }
        onJoined(c);
        return;
      }
      if (m.room === room && typeof m.offset === 'number') c.offset = m.offset;
      onMessage(c, m);
    });
    ws.on('error', () => {});
    ws.on('close', () => setTimeout(open, 100));
  };
  open();
  c.send = (m) => { if (c.ws?.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(m)); };
  c.close = () => { c.closed = true; c.ws?.close(); };
  return c;
}

/// Debian's Chromium (or `CHROMIUM_BIN`) launched headless by playwright-core; fails loudly
/// when it is missing (scripts/test.sh installs it).
export async function launchChromium() {
  const executablePath = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: apt-get install -y chromium (scripts/test.sh does), or set CHROMIUM_BIN`);
  }
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath, args: ['--no-sandbox'], timeout: 30_000 });
}
