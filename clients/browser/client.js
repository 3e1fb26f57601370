// Switchboard browser client: one dependency-free ES module, served by `switchboard serve`
// at /client.js. The same behaviour as the Rust client (crates/client, docs/client.md):
// reconnection with exponential backoff and full jitter, the close-code policy, a bounded
// offline queue, every room resumed with `since` after a reconnect (each message delivered
// once, in order; a `resync` event when the server can not replay), heartbeats, connection
// state events, and a token provider asked again after 4001.
//
//   import { SwitchboardClient } from '/client.js';
//   const sb = new SwitchboardClient({ token: async () => fetchToken() });
//   sb.addEventListener('message', (e) => console.log(e.detail.room, e.detail.body));
//   await sb.join('chat:general');
//   await sb.publish('chat:general', { text: 'hi' });
//
// Transport: WebSocket (`/ws`). The fallback to SSE + HTTP and long polling is not in this
// version yet (docs/status.md, issue 15).

const DEFAULTS = {
  url: null, // ws(s)://<this page's host>/ws
  token: null, // async () => string; sent as ?token= (browsers can not set headers on a WebSocket)
  tokenVia: 'query', // or 'first-message' (then `auth {token}`, answered by `auth_success`)
  name: null, // display name sent with every join
  backoffBase: 1000,
  backoffCap: 30000,
  rateLimitPause: 10000,
  maxAttempts: Infinity,
  offlineQueue: 1000,
  requestTimeout: 30000,
  pingInterval: 15000,
  pongTimeout: 10000,
  connectTimeout: 10000,
  sendRate: { burst: 20, perSecond: 9.5 }, // null: no pacing (servers with --rate-limit off)
};

/** What a close code means for the next step (SPEC §9, §10). */
export function afterClose(code) {
  if (code === 1000 || code === 1008) return 'stop';
  if (code === 1001 || code === 4003) return 'now';
  if (code === 4001) return 'token';
  if (code === 4002) return 'slow';
  return 'backoff';
}

/** Full jitter: a uniform random delay in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt, base, cap, random = Math.random) {
  const window = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * window);
}

/** A request failed: `code` is the server's error code, or `queue_full`, `timeout`, `closed`, `invalid`. */
export class SwitchboardError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

function checkRoom(room) {
  // The server's rule (docs/protocol.md): 1-255 bytes, no control characters. Checked here
  // because the server's refusal of a malformed request can not name the request.
  const bytes = new TextEncoder().encode(String(room)).length;
  // eslint-disable-next-line no-control-regex
  if (typeof room !== 'string' || bytes === 0 || bytes > 255 || /[\u0000-\u001f\u007f]/.test(room)) {
    throw new SwitchboardError('invalid', `bad room name ${JSON.stringify(room)}`);
  }
}

export class SwitchboardClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    if (!this.options.url) {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      this.options.url = `${scheme}//${location.host}/ws`;
    }
    this.state = 'connecting';
    this.userId = null;
    this._idPrefix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
    this._nextId = 0;
    this._rooms = new Map(); // room -> {position: {offset, epoch}|null, resuming, joinId, joinWaiters[], leaving, leaveWaiters[]}
    this._waiting = []; // requests not sent on the current connection
    this._sent = []; // requests sent, unanswered
    this._queued = 0;
    this._token = null;
    this._attempt = 0;
    this._authFailures = 0;
    this._nowUsed = false;
    this._ws = null;
    this._closed = false;
    this._timers = new Set();
    this._outgoing = [];
    this._tokens = this.options.sendRate ? this.options.sendRate.burst : 0;
    this._tokensAt = Date.now();
    this._pumpTimer = null;
    setTimeout(() => this._connect(), 0);
  }

  /** Requests waiting for a connection or an answer (bounded by `offlineQueue`). */
  get queued() {
    return this._queued;
  }

  /** Join `room` (and rejoin it from the last message after every reconnect). */
  async join(room, since = null) {
    checkRoom(room);
    return this._take((resolve, reject, deadline) => {
      let entry = this._rooms.get(room);
      if (!entry) {
        entry = { position: null, resuming: false, joinId: null, joinWaiters: [], leaving: false, leaveWaiters: [] };
        this._rooms.set(room, entry);
      }
      entry.leaving = false;
      if (since) entry.position = since;
      entry.joinWaiters.push({ resolve, reject, deadline });
      if (this.state === 'connected') this._sendJoin(room);
    });
  }

  /** Leave `room`. */
  async leave(room) {
    checkRoom(room);
    return this._take((resolve, reject, deadline) => {
      const entry = this._rooms.get(room);
      if (entry && this.state === 'connected') {
        entry.leaving = true;
        entry.leaveWaiters.push({ resolve, reject, deadline });
        this._write({ type: 'leave', room, id: this._id() });
        return;
      }
      this._dropRoom(room, new SwitchboardError('closed', 'left before joined'));
      this._settle({ resolve, reject }, undefined);
    });
  }

  /** Publish `data` to `room`; resolves with its offset once stored. Retried with the same id after a reconnect. */
  async publish(room, data) {
    return this.send(room, 'publish', { data });
  }

  /** Send a message of any `type` (`chat`, `typing`, …) to `room`; resolves with its offset. */
  async send(room, type, body = {}) {
    checkRoom(room);
    const message = { ...body, type, room, id: this._id() };
    delete message.channel;
    return this._take((resolve, reject, deadline) => {
      this._submit({ id: message.id, body: message, answeredBy: null, resolve, reject, deadline });
    });
  }

  /** One page of `room`'s history: `{messages, offset, epoch, more}`. */
  async history(room, { since, limit } = {}) {
    checkRoom(room);
    const body = { type: 'history', room, id: this._id() };
    if (since !== undefined) body.since = since;
    if (limit !== undefined) body.limit = limit;
    return this._take((resolve, reject, deadline) => {
      this._submit({ id: body.id, body, answeredBy: ['history', room], resolve, reject, deadline });
    });
  }

  /** Who is in `room`: `[{userId, user?, connections}]`. */
  async presence(room) {
    checkRoom(room);
    const body = { type: 'presence', room, id: this._id() };
    return this._take((resolve, reject, deadline) => {
      this._submit({ id: body.id, body, answeredBy: ['presence', room], resolve, reject, deadline });
    });
  }

  /** Close for good (1000); pending requests fail with `closed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000);
    this._finish(1000, 'closed by the application', false);
  }

  // ---- internals ----

  _id() {
    this._nextId += 1;
    return `${this._idPrefix}-${this._nextId}`;
  }

  _take(start) {
    if (this._closed) return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    if (this._queued >= this.options.offlineQueue) {
      return Promise.reject(new SwitchboardError('queue_full', `the offline queue is full (${this.options.offlineQueue} requests)`));
    }
    this._queued += 1;
    return new Promise((resolve, reject) => {
      start(resolve, reject, Date.now() + this.options.requestTimeout);
      this._armExpiry();
    });
  }

  _settle(waiter, value, error) {
    this._queued -= 1;
    if (error) waiter.reject(error);
    else waiter.resolve(value);
  }

  _submit(request) {
    if (this.state === 'connected') {
      this._write(request.body);
      this._sent.push(request);
    } else {
      this._waiting.push(request);
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit('state', { state, ...detail });
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  async _connect() {
    if (this._closed) return;
    this._setState('connecting');
    let url = this.options.url;
    const { token: provider, tokenVia } = this.options;
    if (provider && this._token === null) {
      try {
        this._token = await provider();
      } catch (e) {
        return this._ended(1006, `token: ${e}`, false);
      }
      if (this._closed) return;
    }
    if (this._token !== null && tokenVia === 'query') {
      url += (url.includes('?') ? '&' : '?') + `token=${encodeURIComponent(this._token)}`;
    }
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      return this._ended(1006, String(e), false);
    }
    this._ws = ws;
    let greeted = false;
    const connectTimer = this._timer(() => {
      if (!greeted && this._ws === ws) ws.close(4000, 'connect timeout');
    }, this.options.connectTimeout);
    ws.onopen = () => {
      if (this._token !== null && tokenVia === 'first-message') ws.send(JSON.stringify({ type: 'auth', token: this._token }));
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._heard();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!greeted) {
        const expected = this._token !== null && tokenVia === 'first-message' ? 'auth_success' : 'welcome';
        if (message.type !== expected) return;
        greeted = true;
        clearTimeout(connectTimer);
        this._opened(message.userId);
        return;
      }
      this._incoming(message);
    };
    ws.onclose = (event) => {
      clearTimeout(connectTimer);
      if (this._ws !== ws) return;
      this._ws = null;
      this._ended(event.code || 1006, event.reason || '', greeted);
    };
  }

  _opened(userId) {
    this.userId = userId;
    this._attempt = 0;
    this._nowUsed = false;
    this._authFailures = 0;
    this._setState('connected', { userId });
    for (const room of this._rooms.keys()) this._sendJoin(room);
    const requests = this._waiting.splice(0);
    for (const r of requests) {
      this._write(r.body);
      this._sent.push(r);
    }
    this._heard();
    this._scheduleRefresh();
  }

  _sendJoin(room) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    const body = { type: 'join', room, id: this._id() };
    if (entry.position) body.since = { offset: entry.position.offset, epoch: entry.position.epoch };
    if (this.options.name) body.user = this.options.name;
    entry.resuming = Boolean(entry.position);
    entry.joinId = body.id;
    this._write(body);
  }

  /**
   * Send, paced just under the server's default rate limit (100 messages / 10 s, bursts of
   * 20; `sendRate: null` turns pacing off): a reconnect that rejoins many rooms and resends
   * a full queue must not be cut off with 4002.
   */
  _write(message) {
    this._outgoing.push(JSON.stringify(message));
    this._pump();
  }

  _pump() {
    const rate = this.options.sendRate;
    while (this._outgoing.length > 0) {
      if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return;
      if (rate) {
        const now = Date.now();
        this._tokens = Math.min(rate.burst, this._tokens + ((now - this._tokensAt) / 1000) * rate.perSecond);
        this._tokensAt = now;
        if (this._tokens < 1) {
          if (!this._pumpTimer) {
            this._pumpTimer = this._timer(() => {
              this._pumpTimer = null;
              this._pump();
            }, Math.ceil(((1 - this._tokens) / rate.perSecond) * 1000));
          }
          return;
        }
        this._tokens -= 1;
      }
      this._ws.send(this._outgoing.shift());
    }
  }

  /** Heartbeat: an application `ping` after `pingInterval` of silence, dead `pongTimeout` later. */
  _heard() {
    clearTimeout(this._pingTimer);
    clearTimeout(this._deadTimer);
    const ws = this._ws;
    this._pingTimer = this._timer(() => {
      if (this._ws !== ws) return;
      if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
      this._deadTimer = this._timer(() => {
        if (this._ws === ws) ws.close(4000, 'heartbeat timeout'); // our own code: ends as 1006-like
      }, this.options.pongTimeout);
    }, this.options.pingInterval);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = jwtExpiry(this._token);
    if (!exp || !this.options.token || this.options.tokenVia === 'ticket') return;
    const left = exp * 1000 - Date.now();
    const wait = Math.max(0, Math.min(left * 0.8, left - 2000));
    this._refreshTimer = this._timer(async () => {
      try {
        const fresh = await this.options.token();
        this._token = fresh;
        this._write({ type: 'refresh', token: fresh });
        this._scheduleRefresh();
      } catch {
        // No fresh token: the server ends the session at `exp` (4001); asked again then.
      }
    }, wait);
  }

  _incoming(m) {
    // A room message carries the relay's stamps, whatever its `type` (the server relays any
    // type, `joined` and `error` included; only its own replies lack them).
    if (typeof m.room === 'string' && typeof m.timestamp === 'number' && typeof m.offset === 'number') {
      return this._delivered(m);
    }
    switch (m.type) {
      case 'joined':
        return this._joined(m);
      case 'left': {
        const entry = this._rooms.get(m.room);
        if (entry && entry.leaving) this._dropRoom(m.room, new SwitchboardError('closed', 'left before joined'));
        return;
      }
      case 'ack': {
        const r = this._takeSent((r) => r.id === String(m.id));
        if (r) this._settle(r, m.offset);
        return;
      }
      case 'history':
      case 'presence': {
        const r = this._takeSent((r) => r.answeredBy && r.answeredBy[0] === m.type && r.answeredBy[1] === m.room);
        if (!r) return;
        if (m.type === 'history') this._settle(r, { messages: m.messages || [], offset: m.offset, epoch: m.epoch, more: Boolean(m.more) });
        else this._settle(r, m.members || []);
        return;
      }
      case 'error':
        return this._error(m);
      case 'user_joined':
      case 'user_left':
        return this._emit('presence', { room: m.room, userId: m.userId, user: m.user, joined: m.type === 'user_joined' });
      case 'lagged':
        return this._emit('lagged', { missed: m.missed });
      case 'pong':
      case 'welcome':
      case 'auth_success':
      case 'refreshed':
        return;
      default:
        if (typeof m.room === 'string') this._delivered(m);
    }
  }

  _joined(m) {
    const entry = this._rooms.get(m.room);
    if (!entry) return;
    const recovered = m.recovered !== false;
    const resync = entry.resuming && !recovered;
    if (!(entry.resuming && recovered)) entry.position = { offset: m.offset, epoch: m.epoch };
    entry.resuming = false;
    entry.joinId = null;
    const joined = { offset: m.offset, epoch: m.epoch, recovered };
    for (const w of entry.joinWaiters.splice(0)) this._settle(w, joined);
    if (resync) this._emit('resync', { room: m.room, offset: m.offset });
  }

  _delivered(m) {
    const entry = this._rooms.get(m.room);
    if (!entry) return; // left meanwhile
    if (typeof m.offset === 'number' && entry.position) {
      if (m.offset <= entry.position.offset) return; // already delivered
      entry.position.offset = m.offset;
    }
    this._emit('message', { room: m.room, type: m.type, offset: m.offset, body: m });
  }

  _error(m) {
    const error = new SwitchboardError(m.code || 'error', m.message || '');
    if (m.id !== undefined) {
      const id = String(m.id);
      const r = this._takeSent((r) => r.id === id);
      if (r) {
        if (m.code === 'unavailable' && Date.now() + 250 < r.deadline) {
          this._timer(() => this._submit(r), 250); // retried with the same id (deduplicated)
        } else {
          this._settle(r, null, error);
        }
        return;
      }
      for (const [room, entry] of this._rooms) {
        if (entry.joinId === id) {
          const asked = entry.joinWaiters.length > 0;
          this._dropRoom(room, error);
          // A rejoin after a reconnect: nobody waits for it, so say it.
          if (!asked) this._emit('refused', { room, code: m.code, message: m.message });
          return;
        }
      }
    }
    this._emit('error', { code: m.code, message: m.message });
  }

  /** Forget `room`: leave waiters resolve (it is left), join waiters get `joinError`. */
  _dropRoom(room, joinError) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    this._rooms.delete(room);
    for (const w of entry.joinWaiters) this._settle(w, null, joinError);
    for (const w of entry.leaveWaiters) this._settle(w, undefined);
  }

  _takeSent(match) {
    const i = this._sent.findIndex(match);
    return i < 0 ? null : this._sent.splice(i, 1)[0];
  }

  _armExpiry() {
    if (this._expiryTimer) return;
    this._expiryTimer = this._timer(() => {
      this._expiryTimer = null;
      this._expire();
      if (this._queued > 0) this._armExpiry();
    }, 1000);
  }

  _expire() {
    const now = Date.now();
    const timeout = () => new SwitchboardError('timeout', `no answer within ${this.options.requestTimeout} ms`);
    for (const list of [this._waiting, this._sent]) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (list[i].deadline <= now) this._settle(list.splice(i, 1)[0], null, timeout());
      }
    }
    for (const entry of this._rooms.values()) {
      for (const list of [entry.joinWaiters, entry.leaveWaiters]) {
        for (let i = list.length - 1; i >= 0; i--) {
          if (list[i].deadline <= now) this._settle(list.splice(i, 1)[0], null, timeout());
        }
      }
    }
  }

  /** A connection (or an attempt) ended: decide what comes next. */
  _ended(code, reason, established) {
    clearTimeout(this._pingTimer);
    clearTimeout(this._deadTimer);
    clearTimeout(this._refreshTimer);
    // What was sent and not answered goes again, first, on the next connection.
    this._waiting.unshift(...this._sent.splice(0));
    this._outgoing = [];
    for (const [room, entry] of [...this._rooms]) {
      entry.joinId = null;
      if (entry.leaving) this._dropRoom(room, new SwitchboardError('closed', 'left before joined'));
    }
    if (this._closed) return;
    if (established) {
      this._attempt = 0;
      this._nowUsed = false;
    }
    if (code === 4000 && reason === 'heartbeat timeout') code = 1006;
    this._setState('disconnected', { code, reason });
    const o = this.options;
    const backoff = backoffDelay(this._attempt, o.backoffBase, o.backoffCap);
    let delay;
    switch (afterClose(code)) {
      case 'stop':
        return this._finish(code, reason, false);
      case 'now':
        delay = this._nowUsed ? backoff : 0;
        this._nowUsed = true;
        break;
      case 'token':
        this._authFailures += 1;
        if (this._authFailures > 3) return this._finish(code, `authentication refused: ${reason}`, true);
        this._token = null;
        delay = this._authFailures === 1 ? 0 : backoff;
        break;
      case 'slow':
        delay = Math.max(backoff, o.rateLimitPause);
        break;
      default:
        delay = backoff;
    }
    this._attempt += 1;
    if (this._attempt > o.maxAttempts) return this._finish(code, `gave up after ${this._attempt - 1} attempts: ${reason}`, true);
    this._setState('reconnecting', { attempt: this._attempt, delay });
    this._timer(() => this._connect(), delay);
  }

  _finish(code, reason, failed) {
    const error = new SwitchboardError('closed', reason);
    for (const r of [...this._waiting.splice(0), ...this._sent.splice(0)]) this._settle(r, null, error);
    for (const entry of this._rooms.values()) {
      for (const w of [...entry.joinWaiters, ...entry.leaveWaiters]) this._settle(w, null, error);
    }
    this._rooms.clear();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._closed = true;
    if (failed) this._setState('failed', { reason });
    else this._setState('closed', { code, reason });
  }
}

/** A JWT's `exp` (seconds), read without verifying (the server verifies). */
function jwtExpiry(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}
