// The console's WebSocket connection (PROTOCOL.md, "Connecting", "Frames", "Close codes"):
// requests paired with replies by `ref`, events handed to the console, and reconnection
// with backoff. It connects with ack=manual: the server replays, after `connected`, every
// message this user has not acknowledged; the console acknowledges what it received and
// dedupes by topic_name + seq.

import { api, ApiError } from './api.js';

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_EVERY_MS = 20000;
const PING_TIMEOUT_MS = 10000;

// Why the link is down, in words (shown by the connection indicator).
export const REASONS = {
  restarting: 'Server restarting',
  unreachable: 'Server unreachable',
  lost: 'Connection lost',
  overloaded: 'Server busy',
  too_big: 'A frame was too large',
  server_error: 'Server error',
  refused: 'Connection refused',
  offline: 'Offline',
};

export class Link {
  // handlers: onState(state, detail), onEvent(frame), onUnauthorized(), onEnded(words)
  constructor(token, handlers) {
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.state = 'idle';
    this.replies = new Map();
    this.nextRef = 1;
    this.attempt = 0;
    this.stopped = true;
    this.timer = null;
    this.pinger = null;
    this.lastReason = null;
    this.onOnline = () => {
      if (this.state === 'waiting') this.reconnectNow();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.timer);
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN) {
        try {
          ws.send(JSON.stringify({ action: 'disconnect' }));
        } catch {
          // closing anyway
        }
      }
      ws.close(1000);
    }
    this.failReplies();
    this.setState('closed');
  }

  reconnectNow() {
    if (this.stopped || this.state === 'open' || this.state === 'connecting') return;
    clearTimeout(this.timer);
    this.open();
  }

  setState(state, detail = {}) {
    this.state = state;
    this.handlers.onState(state, detail);
  }

  async open() {
    clearTimeout(this.timer);
    this.setState('connecting', { reason: this.lastReason });
    let info;
    try {
      // The gateway's port may change when the server restarts: ask every time.
      info = await api('/api/v1/info');
    } catch {
      this.retry(navigator.onLine === false ? 'offline' : 'unreachable');
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    // ack=manual: a message counts as delivered once this page acknowledges it, so what
    // never reached the page (closed, crashed, cut off) comes back as pending next time.
    const url = `${scheme}://${location.hostname}:${info.ws_port}/` +
      `${encodeURIComponent(this.token)}?ack=manual`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry('unreachable');
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => this.frame(event.data);
    ws.onclose = (event) => this.closed(ws, event.code, opened);
  }

  frame(text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      return;
    }
    if (data === null || typeof data !== 'object') return;
    if ('result' in data) {
      const waiting = this.replies.get(data.ref);
      if (waiting === undefined) return;
      this.replies.delete(data.ref);
      if (data.result === 'ok') waiting.resolve(data);
      else waiting.reject(new ApiError(0, data.error || 'error', data.message || ''));
      return;
    }
    if (data.event === 'connected') {
      this.attempt = 0;
      this.lastReason = null;
      this.setState('open');
      this.startPing();
    }
    this.handlers.onEvent(data);
  }

  // One action, one reply: resolves with the ok reply, rejects with an ApiError.
  request(action, fields = {}) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (this.state !== 'open' || !ws || ws.readyState !== WebSocket.OPEN) {
        reject(new ApiError(0, 'disconnected', ''));
        return;
      }
      const ref = `c${this.nextRef++}`;
      this.replies.set(ref, { resolve, reject });
      ws.send(JSON.stringify({ ...fields, action, ref }));
    });
  }

  failReplies() {
    const waiting = [...this.replies.values()];
    this.replies.clear();
    for (const { reject } of waiting) reject(new ApiError(0, 'disconnected', ''));
  }

  async closed(ws, code, opened) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.stopPing();
    this.failReplies();
    if (this.stopped) {
      this.setState('closed');
      return;
    }
    if (code === 1008) {
      this.stopped = true;
      this.setState('closed');
      this.handlers.onEnded('The server closed your session: your account was deleted.');
      return;
    }
    if (!opened) {
      // A refused handshake looks like any failure to a browser: ask the REST API whether
      // the token is still good before trying again.
      try {
        await api('/api/v1/topics', { token: this.token });
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) {
          this.stopped = true;
          this.setState('closed');
          this.handlers.onUnauthorized();
          return;
        }
        this.retry('unreachable');
        return;
      }
      this.retry('refused');
      return;
    }
    const reasons = { 1012: 'restarting', 1013: 'overloaded', 1009: 'too_big', 1011: 'server_error' };
    this.retry(reasons[code] || 'lost', code);
  }

  retry(reason, code = null) {
    if (this.stopped) return;
    // Once the server said it is restarting, say so until it is back.
    if (this.lastReason === 'restarting' && (reason === 'unreachable' || reason === 'refused')) {
      reason = 'restarting';
    }
    this.lastReason = reason;
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (1 + Math.random() * 0.25));
    this.attempt += 1;
    this.setState('waiting', { reason, code, until: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  startPing() {
    this.stopPing();
    this.pinger = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      let answered = false;
      this.request('ping').then(
        () => {
          answered = true;
        },
        () => {
          answered = true;
        },
      );
      setTimeout(() => {
        if (!answered && ws === this.ws) {
          // No answer: the connection is dead even if the browser has not noticed.
          ws.onclose = null;
          ws.close();
          this.closed(ws, 1006, true);
        }
      }, PING_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  stopPing() {
    clearInterval(this.pinger);
    this.pinger = null;
  }
}
