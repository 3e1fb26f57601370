// Chaos over a scaled-out deployment: three switchboard nodes on one real redis-server (with
// its append-only file, as in production). Two publishers send numbered streams (closed
// loop, retrying with the same id on `unavailable` or a lost connection) while subscribers
// spread over the nodes resume from their offsets whenever they are cut; meanwhile nodes
// are killed with SIGKILL and restarted, and Redis is stopped and restarted, at random
// (bounded: a fixed number of events, seeded). At the end every subscriber whose every
// resume was `recovered: true` has every message of every stream exactly once, in order;
// one that was told `recovered: false` may miss messages but never gets one twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { binary, freePort, jwt, resumingMember } from './server.mjs';

const SECRET = 'chaos-secret-of-enough-length-0123456789';
const ROOM = 'chaos';
const PER_PUBLISHER = 150;
const EVENTS = 6;

/// A small seeded generator: the same chaos every run.
function random(seed) {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function accepts(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
    c.on('error', () => resolve(false));
  });
}

/// A process on a fixed port (restartable there), started once it accepts connections.
async function process_(argv, port, what) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.on('error', () => {});
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null) throw new Error(`${what} exited at start (${child.exitCode})`);
    if (Date.now() > deadline) throw new Error(`${what} did not start`);
    await sleep(30);
  }
  return {
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

test('chaos: nodes and Redis killed and restarted during two numbered streams; nothing lost or duplicated for clients that resume', async (t) => {
  const rand = random(20261206);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-chaos-'));
  const config = path.join(dir, 'switchboard.toml');
  fs.writeFileSync(config, `[auth.jwt]\nsecrets = ["${SECRET}"]\n`);
  const redisPort = await freePort();
  const startRedis = () => process_(['redis-server', '--port', String(redisPort), '--bind', '127.0.0.1',
    '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], redisPort, 'redis-server');
  const ports = [await freePort(), await freePort(), await freePort()];
  const startNode = (i) => process_([binary, 'serve', '--listen', `127.0.0.1:${ports[i]}`, '--config', config,
    '--broker', `redis://127.0.0.1:${redisPort}/`, '--broker-timeout', '500ms', '--rate-limit', 'off',
    '--log-level', 'error'], ports[i], `node ${i}`);
  let redis = await startRedis();
  const nodes = [];
  for (let i = 0; i < 3; i++) nodes.push(await startNode(i));
  const down = new Set();
  const clients = [];
  try {
    // A client of the deployment: connects to node `home`, or the next one up; on a cut it
    // reconnects (elsewhere if need be) and resumes from its offset.
    const connect = (sub, home, onOpen, onMessage) => {
      const c = resumingMember({
        url: (attempt) => `ws://127.0.0.1:${ports[(home + attempt) % 3]}/ws?token=${jwt(SECRET, sub)}`,
        room: ROOM,
        onJoined: (member) => onOpen?.(member),
        onMessage,
      });
      c.sub = sub;
      clients.push(c);
      return c;
    };

    // Subscribers: two per node, recording (publisher, i) in arrival order.
    const subscribers = [];
    for (let i = 0; i < 6; i++) {
      const s = connect(`sub-${i}`, i % 3, null, (c, m) => {
        if (m.type === 'n' && m.room === ROOM) c.got.push(`${m.p}:${m.i}`);
      });
      s.got = [];
      subscribers.push(s);
    }
    await sleep(500);

    // Publishers: closed loop; an `unavailable` error or a cut resends the same id.
    const publishers = [0, 1].map((p) => {
      const state = { next: 0, acked: 0 };
      const resend = (c) => {
        if (state.next < PER_PUBLISHER) c.send({ type: 'n', room: ROOM, id: `p${p}-${state.next}`, p, i: state.next });
      };
      const c = connect(`pub-${p}`, p, (c2) => setTimeout(() => resend(c2), 50), (c2, m) => {
        if (m.type === 'ack' && m.id === `p${p}-${state.next}`) {
          state.next += 1;
          state.acked += 1;
          resend(c2);
        } else if (m.type === 'error' && m.code === 'unavailable') {
          setTimeout(() => resend(c2), 200);
        }
      });
      state.client = c;
      return state;
    });

    // The chaos: EVENTS random events, ~1.5 s apart, each healed ~1 s later.
    const events = [];
    for (let e = 0; e < EVENTS; e++) {
      await sleep(800 + rand() * 1000);
      if (rand() < 0.35) {
        events.push('redis');
        await redis.kill('SIGTERM');
        await sleep(700 + rand() * 800);
        redis = await startRedis();
      } else {
        const victim = Math.floor(rand() * 3);
        if (down.has(victim)) continue;
        down.add(victim);
        events.push(`node ${victim}`);
        await nodes[victim].kill('SIGKILL');
        await sleep(500 + rand() * 1000);
        nodes[victim] = await startNode(victim);
        down.delete(victim);
      }
    }
    // Let the streams finish (bounded).
    const deadline = Date.now() + 60_000;
    while (publishers.some((p) => p.next < PER_PUBLISHER)) {
      assert.ok(Date.now() < deadline, `publishers stuck at ${publishers.map((p) => p.next)}`);
      await sleep(100);
    }
    const expected = [];
    for (let p = 0; p < 2; p++) for (let i = 0; i < PER_PUBLISHER; i++) expected.push(`${p}:${i}`);
    const complete = () => subscribers.every((s) => !s.joins.every((j) => j.recovered) || s.got.length >= expected.length);
    const settle = Date.now() + 20_000;
    while (!complete() && Date.now() < settle) await sleep(100);

    let exact = 0;
    for (const s of subscribers) {
      // Never twice, whatever happened.
      const seen = new Set();
      for (const k of s.got) {
        assert.ok(!seen.has(k), `${s.sub} got ${k} twice`);
        seen.add(k);
      }
      // Each stream in order.
      for (let p = 0; p < 2; p++) {
        const is = s.got.filter((k) => k.startsWith(`${p}:`)).map((k) => Number(k.split(':')[1]));
        assert.ok(is.every((v, j) => j === 0 || v > is[j - 1]), `${s.sub}: stream ${p} out of order`);
      }
      if (s.joins.every((j) => j.recovered)) {
        assert.deepEqual([...s.got].sort(), [...expected].sort(), `${s.sub} resumed every time: nothing may be missing`);
        exact += 1;
      }
    }
    t.diagnostic(`events: ${events.join(', ')}; subscribers checked exactly: ${exact}/6; ` +
      `resumes: ${subscribers.map((s) => s.joins.map((j) => (j.recovered ? 'r' : 'R')).join('')).join(' ')}`);
    assert.ok(exact >= 1, 'at least one subscriber was checked exactly');
    assert.ok(subscribers.some((s) => s.joins.length > 1), 'the chaos cut some subscriber');
  } finally {
    for (const c of clients) c.close();
    for (const n of nodes) await n.kill('SIGTERM');
    await redis.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
