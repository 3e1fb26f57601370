// Switchboard browser client: one dependency-free ES module, served by `switchboard serve`
// at /client.js. The same behaviour as the Rust client (crates/client, docs/client.md):
// reconnection with exponential backoff and full jitter, the close-code policy, a bounded
// offline queue, every room resumed from its last message after a reconnect (each message
// delivered once, in order; a `resync` event when the server can not replay), heartbeats,
// connection state events, and a token provider asked again after 4001.
//
//   import { SwitchboardClient } from '/client.js';
//   const sb = new SwitchboardClient({ token: async () => fetchToken() });
//   sb.addEventListener('message', (e) => console.log(e.detail.room, e.detail.body));
//   await sb.join('chat:general');
//   await sb.publish('chat:general', { text: 'hi' });
//
// Transports, in order of preference (option `transports`): WebSocket (`/ws`), then
// Server-Sent Events (`/events`) with requests over the HTTP API (`POST /api/publish`,
// `GET /api/history`, `GET /api/presence`), then long polling (`/poll`) with the same HTTP
// requests. A transport that can not connect (or is cut before it greets) hands over to the
// next one at once; once all failed in a row the client backs off and starts again from the
// first. On a fallback it tries the WebSocket again every `upgradeInterval` and moves back
// up when it greets. Room positions survive every move: a stream is opened with the
// positions the client has (SSE `lastEventId`, poll `cursor`), a WebSocket rejoins with
// `since`, so nothing is lost or repeated across transports (docs/browser.md).

const DEFAULTS = {
  url: null, // ws(s)://<this page's host>/ws
  base: null, // http(s)://<host> for /events, /poll and /api/*; default: from `url`, else this page's origin
  transports: ['websocket', 'sse', 'poll'],
  token: null, // async () => string; sent as ?token= on /ws, /events, /poll, as Authorization on /api/*
  tokenVia: 'query', // or 'first-message' (WebSocket: `auth {token}`, answered by `auth_success`)
  name: null, // display name sent with every WebSocket join
  backoffBase: 1000,
  backoffCap: 30000,
  rateLimitPause: 10000,
  maxAttempts: Infinity,
  offlineQueue: 1000,
  requestTimeout: 30000,
  pingInterval: 15000,
  pongTimeout: 10000,
  connectTimeout: 10000,
  upgradeInterval: 30000, // on a fallback transport: try the WebSocket again this often
  streamSilence: 60000, // an SSE stream without a byte (the server's :heartbeat is every 25 s) is dead
  pollTimeout: 45000, // a held poll is answered within the server's poll_timeout (25 s)
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

/**
 * The 4-digit base-36 tag the server's stream positions carry for a room's history epoch
 * (FNV-1a of its bytes, mod 36^4; crates/server/src/feed/cursor.rs).
 */
export function epochTag(epoch) {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(epoch)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h % 1679616;
}

/** A stream position (`<offset b36>-<tag b36>` per room, `.`-joined, `_` for none) → [{offset, tag}|null]. */
export function parsePositions(text) {
  return text.split('.').map((item) => {
    const [offset, tag] = item.split('-');
    if (item === '_' || tag === undefined) return null;
    const o = parseInt(offset, 36);
    const t = parseInt(tag, 36);
    return Number.isFinite(o) && Number.isFinite(t) ? { offset: o, tag: t } : null;
  });
}

function encodePositions(positions) {
  return positions.map((p) => (p ? `${p.offset.toString(36)}-${p.tag.toString(36).padStart(4, '0')}` : '_')).join('.');
}

/** A request failed: `code` is the server's error code, or `queue_full`, `timeout`, `closed`, `invalid`, `network`, `unauthorized`, `forbidden`. */
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

/** A stream's `channels=` list is comma-separated: a room it carries can not hold a comma. */
function checkStreamable(room, transports) {
  if (room.includes(',') && transports.some((t) => t !== 'websocket')) {
    throw new SwitchboardError('invalid', `room ${JSON.stringify(room)}: a comma can not go over SSE or long polling (use transports: ['websocket'])`);
  }
}

/** The error an HTTP status stands for (the API answers `{error}`). */
function httpError(status, message) {
  const code =
    { 400: 'invalid', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 413: 'too_large', 429: 'rate_limited', 503: 'unavailable' }[status] ||
    'error';
  return new SwitchboardError(code, message || `HTTP ${status}`);
}

/** The close code a refused stream or poll stands for. */
function closeCodeOf(status) {
  if (status === 401) return 4001;
  if (status === 429) return 4002;
  if (status === 400 || status === 403) return 1008;
  return 1006;
}

/** A connection that ends sooner than this after its greeting counts as failed. */
const SETTLE_MS = 5000;

const position = (offset, epoch) => ({ offset, epoch, tag: epochTag(epoch) });

export class SwitchboardClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    if (!o.base) o.base = o.url ? o.url.replace(/^ws/, 'http').replace(/^(https?:\/\/[^/]+).*$/, '$1') : location.origin;
    if (!o.url) o.url = `${o.base.replace(/^http/, 'ws')}/ws`;
    if (!o.transports.length) throw new SwitchboardError('invalid', 'no transports');
    this.state = 'connecting';
    this.userId = null;
    /** The transport in use (or being tried): 'websocket', 'sse' or 'poll'. */
    this.transport = o.transports[0];
    this._kindIndex = 0;
    this._failedInRow = 0; // transports that could not connect, in a row
    this._idPrefix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
    this._nextId = 0;
    // room -> {position: {offset, epoch|null, tag}|null, resuming, joinId, epochProbe, joinWaiters[], leaving, leaveWaiters[]}
    this._rooms = new Map();
    this._waiting = []; // requests not sent on the current connection
    this._sent = []; // requests sent over the WebSocket, unanswered
    this._httpQueue = []; // requests going over the HTTP API (on SSE or long polling), in order
    this._retrying = new Set(); // requests answered `unavailable`, sent again shortly
    this._httpBusy = false;
    this._queued = 0;
    this._token = null;
    this._attempt = 0;
    this._authFailures = 0;
    this._nowUsed = false;
    this._conn = null; // the connection: {kind, ws | controller, channels, greeted, dead}
    this._ws = null; // this._conn.ws once greeted
    this._probe = null; // a WebSocket tried while on a fallback
    this._draining = null; // a stream replaced by `this._conn`, read until that one is greeted
    this._drainedPresence = new Map(); // presence events a replaced stream delivered (see `_notice`)
    this._closed = false;
    this._timers = new Set();
    this._outgoing = [];
    this._tokens = o.sendRate ? o.sendRate.burst : 0;
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
    checkStreamable(room, this.options.transports);
    return this._take((resolve, reject, deadline) => {
      let entry = this._rooms.get(room);
      if (!entry) {
        entry = { position: null, resuming: false, joinId: null, epochProbe: null, joinWaiters: [], leaving: false, leaveWaiters: [] };
        this._rooms.set(room, entry);
      }
      entry.leaving = false;
      if (since) {
        entry.position = position(since.offset, since.epoch);
        entry.since = true;
      }
      entry.joinWaiters.push({ resolve, reject, deadline });
      if (this.state === 'connected') this._sendJoin(room);
    });
  }

  /** Leave `room`. */
  async leave(room) {
    checkRoom(room);
    return this._take((resolve, reject, deadline) => {
      const entry = this._rooms.get(room);
      if (entry && this.state === 'connected' && this._ws) {
        entry.leaving = true;
        entry.leaveWaiters.push({ resolve, reject, deadline });
        this._write({ type: 'leave', room, id: this._id() });
        return;
      }
      this._dropRoom(room, new SwitchboardError('closed', 'left before joined'));
      this._settle({ resolve, reject }, undefined);
      if (this.state === 'connected') this._restartFeedSoon(); // a stream without the room
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
    this._endConn(this._probe);
    this._probe = null;
    this._endDraining();
    const conn = this._conn;
    this._conn = null;
    this._ws = null;
    this._endConn(conn);
    this._finish(1000, 'closed by the application', false);
  }

  // ---- requests ----

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

  /** Answer a waiter, once (an HTTP request may finish after its deadline settled it). */
  _settle(waiter, value, error) {
    if (waiter.done) return;
    waiter.done = true;
    this._queued -= 1;
    if (error) waiter.reject(error);
    else waiter.resolve(value);
  }

  _submit(request) {
    if (this.state !== 'connected') {
      this._waiting.push(request);
    } else if (this._ws) {
      this._write(request.body);
      this._sent.push(request);
    } else {
      this._httpQueue.push(request);
      this._runHttp();
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit('state', { state, transport: this.transport, ...detail });
  }

  /** Cancel a timer of `_timer` (forgotten at once: one is made per message received). */
  _clear(t) {
    if (t === undefined || t === null) return;
    clearTimeout(t);
    this._timers.delete(t);
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  /** Ask the token provider when there is one and no token yet; false when it failed (handled). */
  async _ensureToken() {
    if (!this.options.token || this._token !== null) return true;
    try {
      this._token = await this.options.token();
    } catch (e) {
      this._ended(1006, `token: ${e}`);
      return false;
    }
    return !this._closed;
  }

  async _connect() {
    if (this._closed) return;
    this.transport = this.options.transports[this._kindIndex];
    this._setState('connecting');
    if (!(await this._ensureToken())) return;
    if (this.transport === 'websocket') this._openWebSocket();
    else this._openFeed(this.transport);
  }

  // ---- WebSocket ----

  /** A WebSocket that calls `greeted(conn, userId)` once the server welcomed it. */
  _dialWebSocket(greeted) {
    let url = this.options.url;
    const firstMessage = this._token !== null && this.options.tokenVia === 'first-message';
    if (this._token !== null && !firstMessage) {
      url += (url.includes('?') ? '&' : '?') + `token=${encodeURIComponent(this._token)}`;
    }
    const ws = new WebSocket(url);
    const conn = { kind: 'websocket', ws, greeted: false, dead: false, timers: [] };
    const connectTimer = this._timer(() => {
      if (!conn.greeted) ws.close(4000, 'connect timeout');
    }, this.options.connectTimeout);
    ws.onopen = () => {
      if (firstMessage) ws.send(JSON.stringify({ type: 'auth', token: this._token }));
    };
    ws.onmessage = (event) => {
      if (conn.dead) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!conn.greeted) {
        if (message.type !== (firstMessage ? 'auth_success' : 'welcome')) return;
        conn.greeted = true;
        conn.greetedAt = Date.now();
        this._clear(connectTimer);
        greeted(conn, message.userId);
        return;
      }
      if (this._conn === conn) {
        this._heard();
        this._incoming(message);
      }
    };
    ws.onclose = (event) => {
      this._clear(connectTimer);
      if (conn.dead) return;
      conn.dead = true;
      if (this._probe === conn) {
        this._probe = null;
        this._scheduleUpgrade();
      } else if (this._conn === conn) {
        this._conn = null;
        this._ws = null;
        let code = event.code || 1006;
        if (code === 4000 && /timeout/.test(event.reason)) code = 1006; // our own timeouts
        this._ended(code, event.reason || '', conn.greetedAt, conn.upgraded);
      }
    };
    return conn;
  }

  _openWebSocket() {
    try {
      this._conn = this._dialWebSocket((conn, userId) => {
        this._ws = conn.ws;
        this._opened(userId);
      });
    } catch (e) {
      this._ended(1006, String(e));
    }
  }

  /** The WebSocket greeted: rejoin every room from its position, send what waited. */
  _opened(userId) {
    this.userId = userId;
    this._attempt = 0;
    this._nowUsed = false;
    this._authFailures = 0;
    this._failedInRow = 0;
    // Connected before the event: the rejoins (and their epoch probes) and what waited go
    // first, so a request a `state` listener makes comes after them.
    this.state = 'connected';
    for (const room of this._rooms.keys()) this._sendJoin(room);
    const requests = this._waiting.splice(0);
    for (const r of requests) this._submit(r);
    this._heard();
    this._scheduleRefresh();
    this._setState('connected', { userId });
  }

  _sendJoin(room) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    if (!this._ws) {
      const conn = this._conn;
      if (conn && conn.greeted && conn.channels.includes(room) && !entry.since) {
        // Already on the stream: joined.
        const joined = { offset: entry.position ? entry.position.offset : null, epoch: entry.position ? entry.position.epoch : null, recovered: true };
        for (const w of entry.joinWaiters.splice(0)) this._settle(w, joined);
        return;
      }
      // A new room, or a position given (`join(room, since)`): a stream from the positions.
      entry.since = false;
      return this._restartFeedSoon(true);
    }
    if (entry.leaving) return;
    entry.resuming = Boolean(entry.position);
    if (entry.position && entry.position.epoch === null) {
      // A position from a stream carries a tag of the epoch, not the epoch: ask the room's
      // epoch first (an empty history page), then join (`_incoming`, 'history').
      entry.epochProbe = this._id();
      this._write({ type: 'history', room, limit: 0, id: entry.epochProbe });
      return;
    }
    const body = { type: 'join', room, id: this._id() };
    if (entry.position) body.since = { offset: entry.position.offset, epoch: entry.position.epoch };
    if (this.options.name) body.user = this.options.name;
    entry.joinId = body.id;
    this._write(body);
  }

  /** The epoch probe of `room` was answered (`epoch`, or null when refused): join now. */
  _probed(room, epoch) {
    const entry = this._rooms.get(room);
    entry.epochProbe = null;
    // Another epoch than the position's: the join says `recovered: false` (a resync).
    entry.position.epoch = epoch !== null && epochTag(epoch) === entry.position.tag ? epoch : '~';
    this._sendJoin(room);
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

  /** Milliseconds until the pacing allows a send (0: now, and the send is counted). */
  _paceDelay() {
    const rate = this.options.sendRate;
    if (!rate) return 0;
    const now = Date.now();
    this._tokens = Math.min(rate.burst, this._tokens + ((now - this._tokensAt) / 1000) * rate.perSecond);
    this._tokensAt = now;
    if (this._tokens < 1) return Math.ceil(((1 - this._tokens) / rate.perSecond) * 1000);
    this._tokens -= 1;
    return 0;
  }

  _pump() {
    while (this._outgoing.length > 0) {
      if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return;
      const wait = this._paceDelay();
      if (wait > 0) {
        if (!this._pumpTimer) {
          this._pumpTimer = this._timer(() => {
            this._pumpTimer = null;
            this._pump();
          }, wait);
        }
        return;
      }
      this._ws.send(this._outgoing.shift());
    }
  }

  /** Heartbeat: an application `ping` after `pingInterval` of silence, dead `pongTimeout` later. */
  _heard() {
    this._clear(this._pingTimer);
    this._clear(this._deadTimer);
    const ws = this._ws;
    if (!ws) return;
    this._pingTimer = this._timer(() => {
      if (this._ws !== ws) return;
      if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
      this._deadTimer = this._timer(() => {
        if (this._ws === ws) ws.close(4000, 'heartbeat timeout');
      }, this.options.pongTimeout);
    }, this.options.pingInterval);
  }

  _scheduleRefresh() {
    this._clear(this._refreshTimer);
    const exp = jwtExpiry(this._token);
    if (!exp || !this.options.token) return;
    const left = exp * 1000 - Date.now();
    // At least 5 s: a token that looks expired by this clock must not reopen a stream in a loop.
    const wait = Math.max(5000, Math.min(left * 0.8, left - 2000));
    this._refreshTimer = this._timer(async () => {
      try {
        const fresh = await this.options.token();
        this._token = fresh;
        // A WebSocket session is extended in place; a stream is reopened with the new
        // token before the old one's `exp` ends it (positions carry over).
        if (this._ws) this._write({ type: 'refresh', token: fresh });
        else this._restartFeedSoon(true);
        this._scheduleRefresh();
      } catch {
        // No fresh token: the server ends the session at `exp` (4001); asked again then.
      }
    }, wait);
  }

  /** On a fallback transport: try the WebSocket again in `upgradeInterval`. */
  _scheduleUpgrade() {
    this._clear(this._upgradeTimer);
    this._upgradeTimer = null;
    if (this._closed || this.options.transports[0] !== 'websocket' || this.transport === 'websocket') return;
    this._upgradeTimer = this._timer(() => {
      this._upgradeTimer = null;
      this._tryUpgrade();
    }, this.options.upgradeInterval * (this._upgradeFactor || 1));
  }

  _tryUpgrade() {
    if (this._closed || this._probe || !this._conn || this._conn.kind === 'websocket' || this.state !== 'connected') return;
    try {
      this._probe = this._dialWebSocket((probe, userId) => this._upgrade(probe, userId));
    } catch {
      this._scheduleUpgrade();
    }
  }

  /** The probe greeted: it becomes the connection, the stream ends quietly, rooms rejoin with `since`. */
  _upgrade(probe, userId) {
    this._probe = null;
    if (this._closed || this.state !== 'connected' || !this._conn || this._conn.kind === 'websocket') {
      probe.dead = true;
      probe.ws.close(1000);
      return;
    }
    this._endConn(this._conn);
    this._endDraining();
    this._kindIndex = 0;
    this.transport = 'websocket';
    probe.upgraded = true;
    this._conn = probe;
    this._ws = probe.ws;
    // Requests not yet sent over HTTP go over the WebSocket (one in flight finishes there).
    this._waiting.push(...this._httpQueue.splice(this._httpBusy ? 1 : 0));
    this._opened(userId);
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
        const entry = this._rooms.get(m.room);
        if (m.type === 'history' && entry && entry.epochProbe) return this._probed(m.room, m.epoch);
        const r = this._takeSent((r) => r.answeredBy && r.answeredBy[0] === m.type && r.answeredBy[1] === m.room);
        if (!r) return;
        if (m.type === 'history') this._settle(r, { messages: m.messages || [], offset: m.offset, epoch: m.epoch, more: Boolean(m.more) });
        else this._settle(r, m.members || []);
        return;
      }
      case 'error':
        return this._error(m);
      default:
        return this._notice(m);
    }
  }

  /** What every transport delivers besides room messages and replies (`conn`: the stream it came on, if one). */
  _notice(m, conn) {
    switch (m.type) {
      case 'user_joined':
      case 'user_left':
        // Not for a room left meanwhile (a stream replaced make-before-break still carries
        // the room until its successor is greeted).
        if (!this._rooms.has(m.room)) return;
        if (this._repeatedPresence(m, conn)) return;
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
    // Unasked (no join of ours pending): the room's history moved to a new epoch while we
    // were in it (a networked store lost it); our position means nothing any more.
    const unasked = entry.joinId === null && entry.joinWaiters.length === 0;
    const resync = !recovered && (entry.resuming || unasked);
    if (!(entry.resuming && recovered)) entry.position = position(m.offset, m.epoch);
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
          // Retried with the same id (deduplicated); listed meanwhile, so that a deadline or
          // close() still answers it.
          this._retrying.add(r);
          this._timer(() => {
            if (this._retrying.delete(r) && !r.done) this._submit(r);
          }, 250);
        } else {
          this._settle(r, null, error);
        }
        return;
      }
      for (const [room, entry] of this._rooms) {
        if (entry.epochProbe === id && m.code === 'unavailable') {
          entry.epochProbe = null;
          this._timer(() => this._ws && this._rooms.get(room) === entry && this._sendJoin(room), 250);
          return;
        }
        if (entry.epochProbe === id) return this._probed(room, null);
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

  // ---- SSE and long polling ----

  /** A stream (SSE) or a poll loop of every room the client is in, from the positions it has. */
  _openFeed(kind, previous = null) {
    const channels = [...this._rooms.keys()];
    // `previous`: the rooms of the stream this one replaces (a join or leave reopened it).
    const conn = { kind, channels, previous, greeted: false, dead: false, controller: new AbortController(), timers: [], positions: [] };
    this._conn = conn;
    if (channels.length === 0) {
      // Nothing to stream yet: requests go over HTTP; a stream opens with the first join.
      conn.greeted = true;
      conn.greetedAt = Date.now();
      this._feedOpened(conn, this.userId);
      return;
    }
    conn.timers.push(
      this._timer(() => {
        if (!conn.greeted) this._feedFailed(conn, 1006, 'connect timeout');
      }, this.options.connectTimeout),
    );
    const params = new URLSearchParams({ channels: channels.join(',') });
    const positions = channels.map((room) => this._rooms.get(room).position);
    if (positions.some(Boolean)) params.set(kind === 'sse' ? 'lastEventId' : 'cursor', encodePositions(positions));
    if (this._token !== null) params.set('token', this._token);
    if (kind === 'sse') this._stream(conn, params);
    else this._poll(conn, params);
  }

  /**
   * Whether presence event `m` is the second copy of one a replaced stream delivered: both
   * streams of a make-before-break replacement carry what happens while both are open, and
   * presence events have no offset to tell. The server alternates `user_joined` and
   * `user_left` for a user in a room, so the same one again, first on the replaced stream
   * and then on its successor, is that copy. What a replaced stream delivers is noted;
   * the successor's next event about the same user either matches it (dropped) or not
   * (delivered); either way the note goes.
   */
  _repeatedPresence(m, conn) {
    if (!conn) return false;
    const key = `${m.room}\u0000${m.userId}`;
    if (conn.replaced) {
      if (this._drainedPresence.size >= 10000) this._drainedPresence.clear();
      this._drainedPresence.set(key, m.type);
      return false;
    }
    const noted = this._drainedPresence.get(key);
    if (noted === undefined) return false;
    this._drainedPresence.delete(key);
    return noted === m.type;
  }

  /** End the stream a restart replaced, if it still runs (see `_restartFeedSoon`). */
  _endDraining() {
    const draining = this._draining;
    this._draining = null;
    this._endConn(draining);
  }

  /** End `conn` without a word (the caller replaces it). */
  _endConn(conn) {
    if (!conn || conn.dead) return;
    conn.dead = true;
    for (const t of conn.timers) this._clear(t);
    if (conn.ws) conn.ws.close(1000);
    else conn.controller.abort();
  }

  /** The stream or poll of `conn` failed, or the server ended it (`code`: the close code it stands for). */
  _feedFailed(conn, code, reason) {
    if (conn.dead) return;
    this._endConn(conn);
    if (this._conn !== conn) return;
    this._conn = null;
    this._ended(code, reason, conn.greetedAt);
  }

  async _refusal(conn, response) {
    let reason = `HTTP ${response.status}`;
    try {
      reason = (await response.json()).error || reason;
    } catch {
      // not JSON
    }
    if (response.status === 429 && this._draining && this._conn === conn && !conn.dead) {
      // Over a connection limit (per user or per address) with the old stream still open:
      // let it go first, then open the new one (once: the old one is gone now).
      this._endConn(conn);
      this._conn = null;
      this._endDraining();
      return this._openFeed(conn.kind, conn.previous);
    }
    const added = conn.previous ? conn.channels.filter((room) => !conn.previous.includes(room)) : [];
    if ((response.status === 400 || response.status === 403) && added.length > 0 && this._conn === conn && !conn.dead) {
      // The rooms this stream added were refused (not permitted, too many): they fail as a
      // join over a WebSocket would, and the stream goes on with the others.
      this._endConn(conn);
      this._conn = null;
      for (const room of added) {
        const asked = (this._rooms.get(room)?.joinWaiters.length ?? 0) > 0;
        this._dropRoom(room, httpError(response.status, reason));
        if (!asked) this._emit('refused', { room, code: httpError(response.status).code, message: reason });
      }
      return this._openFeed(conn.kind);
    }
    this._feedFailed(conn, closeCodeOf(response.status), reason);
  }

  /** Server-Sent Events over fetch (an EventSource can only listen to event names it knows). */
  async _stream(conn, params) {
    let response;
    try {
      response = await fetch(`${this.options.base}/events?${params}`, {
        signal: conn.controller.signal,
        headers: { Accept: 'text/event-stream' },
        cache: 'no-store',
      });
    } catch (e) {
      return this._feedFailed(conn, 1006, `events: ${e.message}`);
    }
    if (!response.ok) return this._refusal(conn, response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let event = { type: '', data: [], id: null };
    try {
      for (;;) {
        this._streamHeard(conn);
        const { value, done } = await reader.read();
        if (done || conn.dead) break;
        buffer += value;
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, '');
          buffer = buffer.slice(nl + 1);
          if (line === '') {
            // An event with an id and no data moves the position only (a late `joined`).
            if (event.data.length > 0 || event.id !== null) this._streamEvent(conn, event);
            if (conn.dead) return;
            event = { type: '', data: [], id: null };
          } else if (!line.startsWith(':')) {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'data') event.data.push(text);
            else if (field === 'event') event.type = text;
            else if (field === 'id') event.id = text;
          }
        }
      }
    } catch (e) {
      return this._feedFailed(conn, 1006, `events: ${e.message}`);
    }
    this._feedFailed(conn, 1006, 'the stream ended');
  }

  /** Anything on the stream (the server's `:heartbeat` every 25 s included) proves it alive. */
  _streamHeard(conn) {
    this._clear(conn.silence);
    conn.silence = this._timer(() => this._feedFailed(conn, 1006, 'the stream went silent'), this.options.streamSilence);
    conn.timers.push(conn.silence);
    if (conn.timers.length > 64) conn.timers = conn.timers.filter((t) => this._timers.has(t));
  }

  _streamEvent(conn, event) {
    let m = null;
    try {
      m = JSON.parse(event.data.join('\n'));
    } catch {
      // no data (an id alone), or not JSON
    }
    // The id of a room message is the stream's position after it: deliver, then move. The
    // id of `connected` holds the positions its joins set: known before the joins resolve.
    const delivery = m && typeof m.room === 'string' && typeof m.timestamp === 'number' && typeof m.offset === 'number';
    if (event.id && !delivery) this._applyPositions(conn, event.id);
    if (m) this._feedMessage(conn, m);
    if (event.id && delivery && !conn.dead) this._applyPositions(conn, event.id);
  }

  /** Long polling: each answer's messages in order, then its cursor for the next poll. */
  async _poll(conn, params) {
    for (;;) {
      const timer = this._timer(() => this._feedFailed(conn, 1006, 'the poll was not answered'), this.options.pollTimeout);
      conn.timers.push(timer);
      let answer;
      try {
        const response = await fetch(`${this.options.base}/poll?${params}`, { signal: conn.controller.signal, cache: 'no-store' });
        if (conn.dead) return;
        if (!response.ok) {
          this._clear(timer);
          return this._refusal(conn, response);
        }
        answer = await response.json();
      } catch (e) {
        return this._feedFailed(conn, 1006, `poll: ${e.message}`);
      } finally {
        this._clear(timer);
      }
      if (conn.dead) return;
      conn.timers = conn.timers.filter((t) => t !== timer);
      for (const m of Array.isArray(answer.messages) ? answer.messages : []) {
        this._feedMessage(conn, m);
        if (conn.dead) return;
      }
      const cursor = String(answer.cursor || '');
      this._applyPositions(conn, cursor.slice(cursor.indexOf(':') + 1));
      params.set('cursor', cursor);
    }
  }

  /** One message of a stream or poll answer. */
  _feedMessage(conn, m) {
    if (!m || typeof m !== 'object') return;
    if (typeof m.room === 'string' && typeof m.timestamp === 'number' && typeof m.offset === 'number') {
      return this._delivered(m);
    }
    switch (m.type) {
      case 'connected':
        if (conn.greeted) return;
        conn.greeted = true;
        conn.greetedAt = Date.now();
        return this._feedOpened(conn, m.userId);
      case 'reset':
        // History no longer covers these rooms' gaps: the feed goes on from their current
        // offsets (the next position says which); the application reloads their state.
        for (const room of Array.isArray(m.channels) ? m.channels : []) {
          const entry = this._rooms.get(room);
          if (!entry) continue;
          // SSE sent the new position (an id) before the reset; a poll answer's comes
          // after its messages: until then, no position (nothing taken for a repeat).
          const now = conn.kind === 'sse' ? conn.positions[conn.channels.indexOf(room)] : null;
          entry.position = now ? { offset: now.offset, epoch: null, tag: now.tag } : null;
          this._emit('resync', { room, offset: now ? now.offset : null });
        }
        return;
      case 'disconnect':
        return this._feedFailed(conn, Number(m.code) || 1006, String(m.reason || ''));
      default:
        return this._notice(m, conn);
    }
  }

  /** A stream position (SSE id, the poll cursor's positions): rooms the client had no position in get one. */
  _applyPositions(conn, text) {
    const list = parsePositions(text);
    if (list.length !== conn.channels.length) return;
    conn.positions = list;
    conn.channels.forEach((room, i) => {
      const p = list[i];
      const entry = this._rooms.get(room);
      if (!p || !entry) return;
      // Another tag: a new epoch (its `reset` follows on SSE, came first on a poll).
      if (!entry.position || entry.position.tag !== p.tag) entry.position = { offset: p.offset, epoch: null, tag: p.tag };
      else if (p.offset > entry.position.offset) entry.position.offset = p.offset;
    });
  }

  /** The feed greeted: its rooms are joined; what waited goes over HTTP. */
  _feedOpened(conn, userId) {
    // The stream it replaces has carried everything until now: it can go.
    this._endDraining();
    for (const t of conn.timers) this._clear(t);
    conn.timers = [];
    if (conn.kind === 'sse') this._streamHeard(conn);
    if (userId) this.userId = userId;
    this._attempt = 0;
    this._nowUsed = false;
    this._authFailures = 0;
    this._failedInRow = 0;
    this.state = 'connected';
    for (const room of conn.channels) {
      const entry = this._rooms.get(room);
      if (!entry) continue;
      entry.resuming = false;
      const joined = { offset: entry.position ? entry.position.offset : null, epoch: entry.position ? entry.position.epoch : null, recovered: true };
      for (const w of entry.joinWaiters.splice(0)) this._settle(w, joined);
    }
    for (const r of this._waiting.splice(0)) this._submit(r);
    this._scheduleRefresh();
    if (!this._upgradeTimer) this._scheduleUpgrade(); // a feed restart keeps the pending one
    this._restartFeedSoon(); // rooms joined while it connected
    this._setState('connected', { userId: this.userId });
  }

  /** Reopen the feed when the rooms changed (or `always`: a fresh token), once per turn. */
  _restartFeedSoon(always = false) {
    if (always) this._restartAlways = true;
    if (this._restartPending) return;
    this._restartPending = true;
    setTimeout(() => {
      this._restartPending = false;
      const always = this._restartAlways;
      this._restartAlways = false;
      const conn = this._conn;
      if (this._closed || !conn || conn.kind === 'websocket') return;
      if (!conn.greeted || this.state !== 'connected') {
        // Not open yet: its greeting comes back here (`_feedOpened`), the flag kept.
        this._restartAlways ||= always;
        return;
      }
      const rooms = [...this._rooms.keys()];
      if (!always && rooms.length === conn.channels.length && rooms.every((r, i) => r === conn.channels[i])) return;
      // Make before break: the old stream goes on until the new one is greeted. What is on
      // its way on it still arrives (presence events have no offset to replay them from;
      // messages the new stream repeats are dropped by offset), and the user does not leave
      // and rejoin its rooms in the others' eyes. At most one drains: a restart waits for
      // the greeting of the stream before it (above).
      this._endDraining();
      // Notes of an earlier replacement are stale now.
      this._drainedPresence.clear();
      conn.replaced = true;
      this._draining = conn;
      this._openFeed(conn.kind, conn.channels);
    }, 0);
  }

  // ---- requests over the HTTP API (on SSE and long polling) ----

  async _runHttp() {
    if (this._httpBusy) return;
    this._httpBusy = true;
    try {
      while (this._httpQueue.length > 0 && !this._closed) {
        const r = this._httpQueue[0];
        if (r.done) {
          this._httpQueue.shift();
          continue;
        }
        const wait = this._paceDelay();
        if (wait > 0) {
          await new Promise((resolve) => this._timer(resolve, wait));
          continue;
        }
        let outcome;
        try {
          outcome = { value: await this._httpRequest(r) };
        } catch (error) {
          outcome = { error };
        }
        if (this._httpQueue[0] === r) this._httpQueue.shift();
        const retry = outcome.error && this._retryable(r, outcome.error);
        if (retry) {
          this._httpQueue.unshift(r);
          await new Promise((resolve) => this._timer(resolve, retry));
          continue;
        }
        this._settle(r, outcome.value, outcome.error);
      }
    } finally {
      this._httpBusy = false;
    }
  }

  /** Milliseconds before trying `r` again after `error`, or 0 to fail it. */
  _retryable(r, error) {
    if (r.done || this._closed || Date.now() + 250 >= r.deadline) return 0;
    if (error.code === 'unavailable') return 250;
    // Lost on the network: sent again only when the server can tell a repeat (an id of a
    // known user), or when it changes nothing (history, presence).
    if (error.code === 'network' && (r.answeredBy || this._token !== null)) return 1000;
    return 0;
  }

  async _httpRequest(r) {
    const { type, room } = r.body;
    let path;
    let init = { method: 'GET' };
    if (type === 'history') {
      const q = new URLSearchParams({ channel: room });
      if (r.body.since !== undefined) q.set('since', r.body.since);
      if (r.body.limit !== undefined) q.set('limit', r.body.limit);
      path = `/api/history?${q}`;
    } else if (type === 'presence') {
      path = `/api/presence?${new URLSearchParams({ channel: room })}`;
    } else {
      const body = { ...r.body, channel: room };
      delete body.room;
      // Deduplication needs a known sender: without a token the server refuses an id.
      if (this._token === null) delete body.id;
      path = '/api/publish';
      init = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
    }
    for (let refreshed = false; ; refreshed = true) {
      const headers = { ...init.headers };
      if (this._token !== null) headers.Authorization = `Bearer ${this._token}`;
      let response;
      try {
        // Bounded by the request's deadline: a request lost in a black hole must not hold
        // up every one queued behind it.
        const signal = AbortSignal.timeout(Math.max(1000, r.deadline - Date.now()));
        response = await fetch(`${this.options.base}${path}`, { ...init, headers, signal, cache: 'no-store' });
      } catch (e) {
        throw new SwitchboardError('network', e.message);
      }
      let answer = null;
      try {
        answer = await response.json();
      } catch {
        // not JSON
      }
      if (response.status === 401 && this.options.token && !refreshed) {
        // A fresh token for this request; the connection keeps the old one until then (a
        // provider that fails answers this request, it does not end the connection).
        try {
          this._token = await this.options.token();
          continue;
        } catch (e) {
          throw new SwitchboardError('unauthorized', `token: ${e}`);
        }
      }
      if (!response.ok) throw httpError(response.status, answer && answer.error);
      if (type === 'history') return { messages: answer.messages || [], offset: answer.offset, epoch: answer.epoch, more: Boolean(answer.more) };
      if (type === 'presence') return answer.members || [];
      this._learnEpoch(room, answer.epoch);
      return answer.offset;
    }
  }

  /** An epoch the API named: a stream position of the same tag gets it (for a later WebSocket join). */
  _learnEpoch(room, epoch) {
    const entry = this._rooms.get(room);
    if (entry && entry.position && entry.position.epoch === null && typeof epoch === 'string' && epochTag(epoch) === entry.position.tag) {
      entry.position.epoch = epoch;
    }
  }

  // ---- deadlines, reconnection ----

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
    const lists = [this._waiting, this._sent, this._httpQueue, [...this._retrying]];
    for (const entry of this._rooms.values()) lists.push(entry.joinWaiters, entry.leaveWaiters);
    for (const list of lists) {
      for (let i = list.length - 1; i >= 0; i--) {
        // The HTTP request in flight stays listed (settled here, dropped when it returns).
        if (list[i].deadline <= now) this._settle(list === this._httpQueue && i === 0 ? list[0] : list.splice(i, 1)[0], null, timeout());
      }
    }
  }

  /**
   * A connection (or an attempt) ended: decide what comes next. `greetedAt`: when the
   * server greeted it (undefined: never). One that ends within `SETTLE_MS` of its greeting
   * counts as failed, for the backoff and for the fallback: a proxy that lets a WebSocket
   * or a stream through and cuts it at once must not hold the client in a loop.
   */
  _ended(code, reason, greetedAt, upgraded = false) {
    const established = greetedAt !== undefined && Date.now() - greetedAt >= SETTLE_MS;
    // A WebSocket moved up to and cut before it settled: the next try up waits twice as
    // long (up to 16×); one that settled resets it.
    if (upgraded && !established) this._upgradeFactor = Math.min(16, (this._upgradeFactor || 1) * 2);
    else if (established && this.transport === 'websocket') this._upgradeFactor = 1;
    this._clear(this._pingTimer);
    this._clear(this._deadTimer);
    this._clear(this._refreshTimer);
    this._clear(this._upgradeTimer);
    this._upgradeTimer = null;
    this._endConn(this._probe);
    this._probe = null;
    this._endDraining();
    // What was sent and not answered goes again, first, on the next connection.
    this._waiting.unshift(...this._sent.splice(0));
    this._outgoing = [];
    for (const [room, entry] of [...this._rooms]) {
      entry.joinId = null;
      entry.epochProbe = null;
      if (entry.leaving) this._dropRoom(room, new SwitchboardError('closed', 'left before joined'));
    }
    if (this._closed) return;
    if (established) {
      this._attempt = 0;
      this._nowUsed = false;
    }
    this._setState('disconnected', { code, reason });
    const o = this.options;
    const policy = afterClose(code);
    if (!established && policy === 'backoff') {
      // This transport could not connect: the next one is tried at once; after all of
      // them failed in a row, the client backs off and starts over from the first.
      this._failedInRow += 1;
      this._kindIndex = (this._kindIndex + 1) % o.transports.length;
      if (this._failedInRow < o.transports.length) {
        this.transport = o.transports[this._kindIndex];
        this._setState('reconnecting', { attempt: this._attempt, delay: 0 });
        this._timer(() => this._connect(), 0);
        return;
      }
      this._failedInRow = 0;
      this._kindIndex = 0;
    }
    const backoff = backoffDelay(this._attempt, o.backoffBase, o.backoffCap);
    let delay;
    switch (policy) {
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
    this.transport = o.transports[this._kindIndex];
    this._setState('reconnecting', { attempt: this._attempt, delay });
    this._timer(() => this._connect(), delay);
  }

  _finish(code, reason, failed) {
    const error = new SwitchboardError('closed', reason);
    const retrying = [...this._retrying];
    this._retrying.clear();
    for (const r of [...this._waiting.splice(0), ...this._sent.splice(0), ...this._httpQueue.splice(0), ...retrying]) this._settle(r, null, error);
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
