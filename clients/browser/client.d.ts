// Type declarations for /client.js (clients/browser/client.js).

export interface SwitchboardOptions {
  /** ws(s)://host/ws; default: from `base`. */
  url?: string;
  /** http(s)://host for /events, /poll and /api/*; default: from `url`, else this page's origin. */
  base?: string;
  /**
   * Transports in order of preference; default ['websocket', 'sse', 'poll']. One that can not
   * connect (or is cut within 5 s of its greeting) hands over to the next at once; after all
   * failed in a row the client backs off and starts over. On SSE and polling, publish,
   * history and presence go over the HTTP API (`Authorization: Bearer <token>`).
   */
  transports?: Array<'websocket' | 'sse' | 'poll'>;
  /** On a fallback transport, try the WebSocket again this often (ms). Default 30000. */
  upgradeInterval?: number;
  /** An SSE stream silent this long (the server's heartbeat is every 25 s) is dead (ms). Default 60000. */
  streamSilence?: number;
  /** A poll not answered within this is dead (ms; the server holds one 25 s). Default 45000. */
  pollTimeout?: number;
  /** Asked at the first connect, after a close with 4001, and before the token's `exp`. */
  token?: () => Promise<string>;
  /** Where the token goes: `?token=` (default) or the first message `auth {token}`. */
  tokenVia?: 'query' | 'first-message';
  /** Display name sent with every join. */
  name?: string;
  /** Backoff with full jitter: attempt n waits uniform [0, min(cap, base·2ⁿ)] ms. Defaults 1000 / 30000. */
  backoffBase?: number;
  backoffCap?: number;
  /** Least wait after 4002 (rate limit), ms. Default 10000. */
  rateLimitPause?: number;
  /** Give up after this many failed attempts in a row. Default Infinity. */
  maxAttempts?: number;
  /** Requests waiting for a connection or an answer, at most; beyond it `queue_full`. Default 1000. */
  offlineQueue?: number;
  /** A request's answer must come within this (ms, offline time included). Default 30000. */
  requestTimeout?: number;
  /** An application ping after this much silence (ms); dead `pongTimeout` later. Defaults 15000 / 10000. */
  pingInterval?: number;
  pongTimeout?: number;
  connectTimeout?: number;
  /** Pacing of sends: default {burst: 20, perSecond: 9.5}, under the server's default limit; null: none. */
  sendRate?: { burst: number; perSecond: number } | null;
}

export type State = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed' | 'failed';

export type Transport = 'websocket' | 'sse' | 'poll';

export interface StateDetail {
  state: State;
  /** The transport in use, or the one tried next. */
  transport: Transport;
  userId?: string;
  attempt?: number;
  delay?: number;
  code?: number;
  reason?: string;
}

export interface MessageDetail {
  room: string;
  type: string;
  offset?: number;
  /** The whole message: the sender's fields plus userId, user, room, timestamp, offset, id. */
  body: Record<string, unknown>;
}

export interface Joined {
  /** null: on SSE or polling, when the stream did not know the room's position yet. */
  offset: number | null;
  /** null on SSE or polling (streams carry a tag of the epoch, not the epoch). */
  epoch: string | null;
  /** Always true on SSE or polling: a gap history no longer covers comes as a `resync` event. */
  recovered: boolean;
}

export interface HistoryPage {
  messages: Record<string, unknown>[];
  offset: number;
  epoch: string;
  more: boolean;
}

export interface Member {
  userId: string;
  user?: string;
  connections: number;
}

export class SwitchboardError extends Error {
  /**
   * The server's error code, or queue_full, timeout, closed, invalid; over the HTTP API
   * (SSE, polling): unauthorized, forbidden, not_found, too_large, rate_limited,
   * unavailable, network.
   */
  code: string;
}

export declare function afterClose(code: number): 'stop' | 'now' | 'token' | 'slow' | 'backoff';
/** The 4-digit base-36 tag stream positions carry for a room's history epoch. */
export declare function epochTag(epoch: string): number;
/** A stream position (an SSE id, a poll cursor's positions): one per room of the stream. */
export declare function parsePositions(text: string): Array<{ offset: number; tag: number } | null>;
export declare function backoffDelay(attempt: number, base: number, cap: number, random?: () => number): number;

export class SwitchboardClient extends EventTarget {
  constructor(options?: SwitchboardOptions);
  readonly state: State;
  readonly userId: string | null;
  /** The transport in use (or being tried). */
  readonly transport: Transport;
  /** Requests waiting for a connection or an answer. */
  readonly queued: number;
  join(room: string, since?: { offset: number; epoch: string } | null): Promise<Joined>;
  leave(room: string): Promise<void>;
  publish(room: string, data: unknown): Promise<number>;
  send(room: string, type: string, body?: Record<string, unknown>): Promise<number>;
  history(room: string, options?: { since?: number; limit?: number }): Promise<HistoryPage>;
  presence(room: string): Promise<Member[]>;
  close(): void;
  addEventListener(type: 'state', listener: (e: CustomEvent<StateDetail>) => void): void;
  addEventListener(type: 'message', listener: (e: CustomEvent<MessageDetail>) => void): void;
  addEventListener(type: 'presence', listener: (e: CustomEvent<{ room: string; userId: string; user?: string; joined: boolean }>) => void): void;
  addEventListener(type: 'resync', listener: (e: CustomEvent<{ room: string; offset: number | null }>) => void): void;
  addEventListener(type: 'lagged', listener: (e: CustomEvent<{ missed: number }>) => void): void;
  addEventListener(type: 'refused', listener: (e: CustomEvent<{ room: string; code: string; message: string }>) => void): void;
  addEventListener(type: 'error', listener: (e: CustomEvent<{ code: string; message: string }>) => void): void;
}
