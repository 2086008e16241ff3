// The admin view: GET /api/v1/admin/stats (admins only), refreshed every few seconds.
// Everything is written with textContent.

import { api, ApiError, inWords } from './api.js';

const REFRESH_MS = 3000;

// The /metrics samples shown, with their names in words; the rest are listed as they come.
const METRIC_WORDS = {
  connections: 'Open connections',
  connections_accepted_total: 'Connections accepted',
  handshakes_refused_total: 'Handshakes refused (bad token)',
  messages_published_total: 'Messages fanned out',
  deliveries_total: 'Live deliveries',
  pending_replayed_total: 'Pending messages replayed',
  slow_consumers_closed_total: 'Slow clients closed (1013)',
  store_errors_total: 'Store errors',
  broker_connected: 'Broker connected (1 = yes)',
  broker_reconnects_total: 'Broker reconnects',
  broker_publish_errors_total: 'Broker publish errors',
};

const $ = (id) => document.getElementById(id);

function cell(text, header = false) {
  const node = document.createElement(header ? 'th' : 'td');
  if (header) node.scope = 'row';
  node.textContent = text;
  return node;
}

function fill(tableId, rows, empty, wrapLast = false) {
  const body = $(tableId).querySelector('tbody');
  const width = $(tableId).querySelectorAll('thead th').length;
  if (rows.length === 0) {
    const td = cell(empty);
    td.colSpan = width;
    td.className = 'none';
    const tr = document.createElement('tr');
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(
    ...rows.map((values) => {
      const tr = document.createElement('tr');
      tr.append(
        ...values.map((value, i) => {
          const td = cell(String(value), i === 0);
          if (i === values.length - 1 && wrapLast) td.className = 'wrap';
          return td;
        }),
      );
      return tr;
    }),
  );
}

function time(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? iso : when.toLocaleTimeString();
}

function number(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

export class AdminView {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    this.timer = null;
    this.previous = null; // {at, metrics}: for per-second rates
    this.busy = false;
  }

  show() {
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    const status = $('admin-status');
    try {
      const stats = await api('/api/v1/admin/stats', { token: this.token });
      this.render(stats);
      status.dataset.kind = '';
      status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.hide();
        this.onUnauthorized();
        return;
      }
      status.dataset.kind = 'warn';
      status.textContent = `${inWords(e, { action: 'admin' })} (showing the last figures received)`;
    } finally {
      this.busy = false;
    }
  }

  render(stats) {
    const nodes = stats.nodes.length;
    $('admin-connections').textContent =
      `${stats.connections} open connection${stats.connections === 1 ? '' : 's'} on ` +
      `${nodes} node${nodes === 1 ? '' : 's'}`;
    fill(
      'nodes-table',
      stats.nodes.map((n) => [
        n.node_id === stats.node_id ? `${n.node_id} (this one)` : n.node_id,
        n.ws_address,
        n.api_address,
        n.connections,
        n.users,
        time(n.started_at),
        time(n.seen_at),
      ]),
      'No node has reported in the last 15 s.',
    );

    $('admin-node').textContent = stats.node_id;
    const now = Date.parse(stats.generated_at);
    const before = this.previous;
    const seconds = before ? (now - before.at) / 1000 : 0;
    const names = [
      ...Object.keys(METRIC_WORDS).filter((k) => k in stats.metrics),
      ...Object.keys(stats.metrics).filter((k) => !(k in METRIC_WORDS)).sort(),
    ];
    fill(
      'metrics-table',
      names.map((name) => {
        const value = stats.metrics[name];
        let rate = '';
        if (name.endsWith('_total') && before && seconds > 0 && name in before.metrics) {
          rate = number(Math.max(0, (value - before.metrics[name]) / seconds));
        }
        return [METRIC_WORDS[name] || name, number(value), rate];
      }),
      'No metrics.',
    );
    this.previous = { at: now, metrics: stats.metrics };

    fill(
      'topics-table',
      stats.topics.map((t) => [
        t.topic_name,
        t.is_private ? 'private' : 'public',
        t.owner === null ? '(deleted)' : t.owner,
        t.members,
        t.last_seq,
        `${t.messages_last_minute}/min`,
      ]),
      'No topics yet.',
    );
    fill(
      'backlog-table',
      stats.pending.map((b) => [b.username, b.messages, b.topics]),
      'Nobody has pending messages.',
    );
    const codes = Object.entries(stats.errors_by_code).filter(([, n]) => n > 0);
    $('errors-by-code').textContent = codes.length
      ? `Since this node started: ${codes.map(([code, n]) => `${code} ${number(n)}`).join(', ')}`
      : 'No errors since this node started.';
    fill(
      'errors-table',
      stats.recent_errors.map((e) => [time(e.at), e.source, e.code, e.message]),
      'No recent errors.',
      true,
    );
  }
}
