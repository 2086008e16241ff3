// The topichub web console. It uses only the public contract: the WebSocket protocol of
// PROTOCOL.md and the documented REST API. User data is only ever put in the page with
// textContent, never parsed as HTML, so message contents show as text, whatever they hold.

import { api, ApiError, inWords } from './api.js';
import { Link, REASONS } from './link.js';
import { AdminView } from './admin.js';

const SESSION_KEY = 'topichub.session';
const NOTICE_KEY = 'topichub.notice';
const PAGE = 50;
const NAME_RULE = /^[A-Za-z0-9_.-]{1,64}$/;
const LONG_MESSAGE = 1200; // characters: longer ones are folded behind "Show all"
const ACK_EVERY_MS = 200; // at most one acknowledgement per topic this often (then one for a burst)

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children);
  return node;
}

function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  const sameDay = when.toDateString() === new Date().toDateString();
  const time = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return sameDay ? time : `${when.toLocaleDateString()} ${time}`;
}

// -- toasts: errors and notices in words --------------------------------------------------

function toast(words, kind = 'error') {
  const box = $('toasts');
  const item = el('div', { class: `toast ${kind}` });
  const text = el('p', { text: words });
  const close = el('button', { type: 'button', class: 'small', 'aria-label': 'Dismiss' }, '×');
  close.addEventListener('click', () => item.remove());
  item.append(text, close);
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 12000 : 6000);
}

// -- the session (token kept in sessionStorage) ------------------------------------------

function loadSession() {
  try {
    const data = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return data && typeof data.token === 'string' && typeof data.username === 'string' ? data : null;
  } catch {
    return null;
  }
}

function endSession(notice) {
  sessionStorage.removeItem(SESSION_KEY);
  if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
  location.reload();
}

// -- dialogs -----------------------------------------------------------------------------

function setupDialog(dialog, onSubmit) {
  const form = dialog.querySelector('form');
  const error = form.querySelector('.form-error');
  form.querySelector('.cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const words = await onSubmit(form);
      if (words) error.textContent = words;
      else dialog.close();
    } finally {
      submit.disabled = false;
    }
  });
  return {
    open() {
      error.textContent = '';
      form.reset();
      dialog.showModal();
      form.querySelector('input').focus();
    },
  };
}

// -- the console -------------------------------------------------------------------------

class Console {
  constructor() {
    this.me = null;
    this.token = null;
    this.link = null;
    this.admin = null;
    this.topics = new Map(); // name -> list_topics entry
    this.directs = new Map(); // peer username -> {last_seq}
    this.convs = new Map(); // name -> conversation state
    this.users = [];
    this.current = null;
    this.outbox = [];
    this.flushing = false;
    this.replayLeft = 0;
    this.everConnected = false;
    this.rendered = { name: null, seqs: [], nodes: new Map() };
    this.countdown = null;
    this.firstAfterReplay = false;
    this.acks = new Map(); // topic_name -> highest seq received, not yet acknowledged
    this.acked = new Map(); // topic_name -> highest seq acknowledged
    this.ackSentAt = 0;
    this.ackTimer = null;
    this.awayNew = 0;
  }

  // ---- signing in ----

  boot() {
    $('auth-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const mode = event.submitter && event.submitter.value === 'register' ? 'register' : 'signin';
      this.signIn(mode);
    });
    const notice = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    const session = loadSession();
    if (session) this.enter(session.username, session.token);
    else this.showAuth(notice || '');
  }

  showAuth(notice) {
    document.body.dataset.view = 'auth';
    $('app-view').hidden = true;
    $('auth-view').hidden = false;
    $('auth-notice').textContent = notice;
    $('auth-username').focus();
  }

  async signIn(mode) {
    const username = $('auth-username').value.trim();
    const password = $('auth-password').value;
    const error = $('auth-error');
    error.textContent = '';
    $('auth-notice').textContent = '';
    if (!username || !password) {
      error.textContent = 'Enter a username and a password.';
      return;
    }
    if (mode === 'register') {
      if (!NAME_RULE.test(username)) {
        error.textContent = 'A username is 1 to 64 characters: letters, digits, “_”, “.” and “-”.';
        return;
      }
      if (password.length < 8) {
        error.textContent = 'Choose a password of at least 8 characters.';
        return;
      }
    }
    const buttons = $('auth-form').querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    try {
      if (mode === 'register') {
        await api('/api/v1/users', { method: 'POST', body: { username, password } });
      }
      const token = await api('/api/v1/token', { method: 'POST', body: { username, password } });
      sessionStorage.setItem(
        SESSION_KEY,
        JSON.stringify({ token: token.access_token, username }),
      );
      $('auth-password').value = '';
      await this.enter(username, token.access_token);
    } catch (e) {
      error.textContent = inWords(e, { action: mode, username });
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  async enter(username, token) {
    this.me = { username, is_admin: false };
    this.token = token;
    try {
      await this.loadUsers();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        endSession('Your session has ended. Sign in again.');
        return;
      }
      // The link below reports an unreachable server; the directory can come later.
    }
    document.body.dataset.view = 'app';
    $('auth-view').hidden = true;
    $('app-view').hidden = false;
    $('whoami').textContent = username;
    $('admin-toggle').hidden = !this.me.is_admin;
    this.bindApp();
    this.link = new Link(token, {
      onState: (state, detail) => this.showLink(state, detail),
      onEvent: (frame) => this.onEvent(frame),
      onUnauthorized: () => endSession('Your session has ended. Sign in again.'),
      onEnded: (words) => endSession(words),
    });
    this.link.start();
    window.addEventListener('pagehide', () => this.flushAcks());
    this.renderSidebar();
    this.renderConversation();
  }

  async loadUsers() {
    const users = await api('/api/v1/users', { token: this.token });
    this.users = users.map((u) => u.username);
    const self = users.find((u) => u.username === this.me.username);
    this.me.is_admin = Boolean(self && self.is_admin);
    const list = $('user-names');
    list.replaceChildren(...this.users.map((name) => el('option', { value: name })));
  }

  async loadDirects() {
    try {
      const found = await api('/api/v1/conversations', { token: this.token });
      for (const { username, last_seq: lastSeq } of found) {
        this.directs.set(username, { last_seq: lastSeq });
      }
      this.renderSidebar();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        endSession('Your session has ended. Sign in again.');
      }
    }
  }

  bindApp() {
    $('sign-out').addEventListener('click', () => {
      this.link.stop();
      endSession('You signed out.');
    });
    $('reconnect-now').addEventListener('click', () => this.link.reconnectNow());
    $('admin-toggle').addEventListener('click', () => this.toggleAdmin());
    $('back-button').addEventListener('click', () => {
      $('chat-view').dataset.pane = 'list';
      const item = document.querySelector('.conv[aria-current="true"]');
      if (item) item.focus();
    });
    $('sidebar').addEventListener('click', (event) => {
      const button = event.target.closest('button.conv');
      if (button) this.open(button.dataset.name);
    });
    $('sidebar').addEventListener('keydown', (event) => this.sidebarKeys(event));
    $('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    $('message-input').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    $('older-button').addEventListener('click', () => this.loadOlder());
    $('scroller').addEventListener('scroll', () => {
      if (this.atBottom()) $('new-below').hidden = true;
    });
    $('new-below').addEventListener('click', () => {
      this.scrollToBottom();
      $('new-below').hidden = true;
    });
    $('join-button').addEventListener('click', () => this.subscribe(this.current));
    $('leave-button').addEventListener('click', () => this.unsubscribe(this.current));

    const newTopic = setupDialog($('new-topic-dialog'), (form) => this.createTopic(form));
    const join = setupDialog($('join-dialog'), (form) => this.joinByName(form));
    const direct = setupDialog($('direct-dialog'), (form) => this.openDirect(form));
    const invite = setupDialog($('invite-dialog'), (form) => this.invite(form));
    $('new-topic-button').addEventListener('click', () => newTopic.open());
    $('join-topic-button').addEventListener('click', () => join.open());
    $('direct-button').addEventListener('click', () => {
      direct.open();
      this.loadUsers().catch(() => {});
    });
    $('invite-button').addEventListener('click', () => {
      invite.open();
      this.loadUsers().catch(() => {});
    });
  }

  sidebarKeys(event) {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const items = [...document.querySelectorAll('#sidebar button.conv')];
    const at = items.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    const next = items[at + (event.key === 'ArrowDown' ? 1 : -1)];
    if (next) next.focus();
  }

  // ---- the connection ----

  showLink(state, detail) {
    const box = $('link-status');
    const text = $('link-text');
    box.dataset.state = state;
    clearInterval(this.countdown);
    $('link-countdown').textContent = '';
    $('reconnect-now').hidden = state !== 'waiting';
    if (state === 'open') {
      text.textContent = 'Connected';
    } else if (state === 'connecting') {
      text.textContent = detail.reason ? `${REASONS[detail.reason]}: reconnecting…` : 'Connecting…';
    } else if (state === 'waiting') {
      // The reason is announced once; the countdown beside it is not read out every second.
      text.textContent = `${REASONS[detail.reason]}: reconnecting`;
      const show = () => {
        const seconds = Math.max(0, Math.ceil((detail.until - Date.now()) / 1000));
        $('link-countdown').textContent = `in ${seconds} s`;
      };
      show();
      this.countdown = setInterval(show, 1000);
      if (detail.reason === 'restarting' && detail.code === 1012) {
        toast('The server is restarting. The console reconnects by itself.', 'notice');
      } else if (detail.code !== null && detail.code !== undefined && this.everConnected) {
        if (detail.reason === 'overloaded') {
          toast('The server was too busy to keep up with this page; reconnecting.', 'notice');
        }
      }
    } else {
      text.textContent = 'Disconnected';
    }
    this.renderComposerStatus();
  }

  onEvent(frame) {
    switch (frame.event) {
      case 'connected':
        this.onConnected(frame);
        break;
      case 'message':
        this.onMessage(frame);
        break;
      case 'invited':
        toast(`${frame.by} invited you to “${frame.topic_name}”.`, 'notice');
        this.refreshTopics();
        break;
      case 'messages_lost':
        toast(
          `${frame.count} older messages of “${frame.topic_name}” expired before you could ` +
            'receive them (the server keeps messages for a limited time).',
          'notice',
        );
        break;
      case 'error':
        toast(inWords(new ApiError(0, frame.error, frame.message)));
        break;
      default:
        break;
    }
  }

  onConnected(frame) {
    const first = !this.everConnected;
    this.everConnected = true;
    this.replayLeft = frame.pending;
    this.awayNew = 0;
    if (this.replayLeft === 0) this.afterReplay(first);
    else this.firstAfterReplay = first;
  }

  async afterReplay(first) {
    // Pending messages this page already had (received, not yet acknowledged) are not news.
    if (this.awayNew > 0) {
      toast(
        this.awayNew === 1
          ? '1 message arrived while you were away.'
          : `${this.awayNew} messages arrived while you were away.`,
        'notice',
      );
    }
    await this.refreshTopics();
    if (first) await this.loadDirects();
    else await this.fillGaps();
    this.flushOutbox();
    if (this.current) {
      const conv = this.conv(this.current);
      if (!conv.loaded) this.loadNewest(conv);
    }
  }

  // After a reconnect: whatever was written to the old connection but never reached this
  // page is in the log. Read each known conversation from its newest seq on (dedupe does
  // the rest).
  async fillGaps() {
    for (const conv of this.convs.values()) {
      if (conv.seqs().length === 0) continue;
      for (let guard = 0; guard < 50; guard += 1) {
        const since = conv.newest();
        let reply;
        try {
          reply = await this.link.request('history', { topic_name: conv.name, since, limit: 100 });
        } catch {
          break; // gone, or not readable any more: nothing to fill
        }
        for (const message of reply.messages) this.addMessage(message);
        const topic = this.topics.get(conv.name);
        if (reply.messages.length > 0 && (conv.direct || (topic && topic.member))) {
          this.scheduleAck(conv.name, conv.newest());
        }
        if (reply.messages.length < 100) break;
      }
    }
  }

  async refreshTopics() {
    try {
      const reply = await this.link.request('list_topics');
      this.topics = new Map(reply.topics.map((t) => [t.topic_name, t]));
      this.renderSidebar();
      if (this.current && !this.isDirect(this.current)) this.renderConversationHeader();
    } catch (e) {
      if (e.code !== 'disconnected') toast(inWords(e));
    }
  }

  // ---- conversations and messages ----

  isDirect(name) {
    const conv = this.convs.get(name);
    if (conv && conv.direct !== null) return conv.direct;
    return this.directs.has(name) && !this.topics.has(name);
  }

  conv(name) {
    let conv = this.convs.get(name);
    if (!conv) {
      conv = {
        name,
        direct: null,
        messages: new Map(),
        loaded: false,
        complete: false,
        unread: 0,
        seqs() {
          return [...this.messages.keys()].sort((a, b) => a - b);
        },
        newest() {
          let top = 0;
          for (const seq of this.messages.keys()) if (seq > top) top = seq;
          return top;
        },
        oldest() {
          let low = Infinity;
          for (const seq of this.messages.keys()) if (seq < low) low = seq;
          return low === Infinity ? null : low;
        },
      };
      this.convs.set(name, conv);
    }
    return conv;
  }

  onMessage(message) {
    const isNew = this.addMessage(message);
    // One's own messages are never pending: nothing to acknowledge.
    if (message.from !== this.me.username) this.scheduleAck(message.topic_name, message.seq);
    if (message.pending && isNew) this.awayNew += 1;
    if (message.pending && this.replayLeft > 0) {
      this.replayLeft -= 1;
      if (this.replayLeft === 0) {
        this.flushAcks(); // the whole replay, acknowledged at once
        this.afterReplay(this.firstAfterReplay);
      }
    }
    if (!isNew) return;
    const conv = this.conv(message.topic_name);
    const viewing = this.current === conv.name && !$('chat-view').hidden &&
      $('chat-view').dataset.pane === 'conversation';
    if (message.from !== this.me.username && !viewing) conv.unread += 1;
    this.renderSidebar();
  }

  // Received: acknowledge it. Unacknowledged messages come back as pending on the next
  // connection. A lone message is acknowledged at once; a burst with one ack per topic
  // (a pending replay when it ends, live traffic at most every ACK_EVERY_MS).
  scheduleAck(name, seq) {
    if (seq <= Math.max(this.acked.get(name) || 0, this.acks.get(name) || 0)) return;
    this.acks.set(name, seq);
    if (this.replayLeft > 0) return;
    const wait = this.ackSentAt + ACK_EVERY_MS - Date.now();
    if (wait <= 0) this.flushAcks();
    else if (this.ackTimer === null) this.ackTimer = setTimeout(() => this.flushAcks(), wait);
  }

  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const acks = [...this.acks.entries()];
    this.acks.clear();
    if (acks.length > 0) this.ackSentAt = Date.now();
    for (const [name, seq] of acks) {
      // A lost ack only means the message is offered again, and deduped.
      this.link.request('ack', { topic_name: name, seq }).then(
        () => this.acked.set(name, Math.max(seq, this.acked.get(name) || 0)),
        () => {},
      );
    }
  }

  // Dedupe by topic_name + seq. Returns true when the message was not known yet.
  addMessage(message) {
    if (typeof message.seq !== 'number' || typeof message.topic_name !== 'string') return false;
    const conv = this.conv(message.topic_name);
    if (conv.direct === null) conv.direct = Boolean(message.direct);
    if (conv.messages.has(message.seq)) return false;
    conv.messages.set(message.seq, { ...message });
    if (message.direct) {
      const entry = this.directs.get(conv.name) || { last_seq: 0 };
      entry.last_seq = Math.max(entry.last_seq, message.seq);
      this.directs.set(conv.name, entry);
    }
    if (this.rendered.name === conv.name) this.insertMessage(conv.messages.get(message.seq));
    return true;
  }

  async open(name) {
    if (!name) return;
    this.current = name;
    const conv = this.conv(name);
    if (conv.direct === null) conv.direct = this.isDirect(name);
    conv.unread = 0;
    $('chat-view').dataset.pane = 'conversation';
    this.renderSidebar();
    this.renderConversation();
    const input = $('message-input');
    if (!input.disabled) input.focus();
    if (!conv.loaded) await this.loadNewest(conv);
  }

  async loadNewest(conv) {
    if (conv.loading) return;
    conv.loading = true;
    $('messages').setAttribute('aria-busy', 'true');
    try {
      const reply = await this.link.request('history', { topic_name: conv.name, limit: PAGE });
      for (const message of reply.messages) this.addMessage(message);
      conv.loaded = true;
      conv.complete = reply.messages.length < PAGE || conv.oldest() === 1;
      if (this.current === conv.name) {
        this.renderOlderRow(conv);
        this.renderEmptyNote(conv);
        this.scrollToBottom();
      }
    } catch (e) {
      if (e.code !== 'disconnected' && this.current === conv.name) {
        toast(inWords(e, { action: 'history', topic: conv.name }));
      }
    } finally {
      conv.loading = false;
      $('messages').removeAttribute('aria-busy');
    }
  }

  async loadOlder() {
    const conv = this.conv(this.current);
    const before = conv.oldest();
    if (before === null || conv.loading) return;
    conv.loading = true;
    const button = $('older-button');
    button.disabled = true;
    try {
      const reply = await this.link.request('history', {
        topic_name: conv.name,
        before,
        limit: PAGE,
      });
      const scroller = $('scroller');
      const height = scroller.scrollHeight;
      const top = scroller.scrollTop;
      for (const message of reply.messages) this.addMessage(message);
      conv.complete = reply.messages.length < PAGE || conv.oldest() === 1;
      this.renderOlderRow(conv);
      // Keep what was on screen where it was.
      scroller.scrollTop = top + (scroller.scrollHeight - height);
    } catch (e) {
      toast(inWords(e, { action: 'history', topic: conv.name }));
    } finally {
      conv.loading = false;
      button.disabled = false;
    }
  }

  // ---- sending: an outbox retried with the same client id after a reconnect ----

  send() {
    const input = $('message-input');
    const text = input.value.replace(/\s+$/, '');
    if (!this.current || text.trim() === '') return;
    const id = `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    this.outbox.push({ topic_name: this.current, content: text, id });
    input.value = '';
    this.renderComposerStatus();
    this.flushOutbox();
  }

  async flushOutbox() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outbox.length > 0 && this.link.state === 'open') {
        const item = this.outbox[0];
        try {
          await this.link.request('message', item);
        } catch (e) {
          if (e.code === 'disconnected') break; // kept: sent again, same id, once back
          toast(`Not sent to “${item.topic_name}”: ${inWords(e, { action: 'message', topic: item.topic_name })}`);
          if ($('message-input').value === '' && this.current === item.topic_name) {
            $('message-input').value = item.content;
          }
        }
        this.outbox.shift();
        this.renderComposerStatus();
      }
    } finally {
      this.flushing = false;
      this.renderComposerStatus();
    }
  }

  // ---- topics: create, join, leave, invite; direct conversations ----

  async createTopic(form) {
    const name = form.querySelector('#new-topic-name').value.trim();
    const isPrivate = form.querySelector('#new-topic-private').checked;
    if (!NAME_RULE.test(name)) {
      return 'A topic name is 1 to 64 characters: letters, digits, “_”, “.” and “-”.';
    }
    try {
      await this.link.request('create', { topic_name: name, is_private: isPrivate });
    } catch (e) {
      return inWords(e, { action: 'create', topic: name });
    }
    await this.refreshTopics();
    const conv = this.conv(name);
    conv.direct = false;
    this.open(name);
    return '';
  }

  async joinByName(form) {
    const name = form.querySelector('#join-name').value.trim();
    if (!NAME_RULE.test(name)) return `There is no topic called “${name}”.`;
    try {
      await this.link.request('subscribe', { topic_name: name });
    } catch (e) {
      return inWords(e, { action: 'subscribe', topic: name });
    }
    await this.refreshTopics();
    this.conv(name).direct = false;
    this.open(name);
    return '';
  }

  async subscribe(name) {
    try {
      await this.link.request('subscribe', { topic_name: name });
      toast(`You joined “${name}”.`, 'notice');
    } catch (e) {
      toast(inWords(e, { action: 'subscribe', topic: name }));
      return;
    }
    await this.refreshTopics();
    if (this.current === name) {
      this.renderConversation();
      $('message-input').focus();
    }
  }

  async unsubscribe(name) {
    try {
      await this.link.request('unsubscribe', { topic_name: name });
      toast(`You left “${name}”.`, 'notice');
    } catch (e) {
      toast(inWords(e, { action: 'unsubscribe', topic: name }));
      return;
    }
    await this.refreshTopics();
    if (!this.topics.has(name)) {
      // A private topic you left is no longer yours to see.
      this.convs.delete(name);
      this.current = null;
      $('chat-view').dataset.pane = 'list';
      this.renderConversation();
    }
  }

  async invite(form) {
    const username = form.querySelector('#invite-name').value.trim();
    const topic = this.current;
    if (!NAME_RULE.test(username)) return `There is no user called “${username}”.`;
    try {
      await this.link.request('invite', { topic_name: topic, username });
    } catch (e) {
      return inWords(e, { action: 'invite', topic, username });
    }
    toast(`${username} can now read and write in “${topic}”.`, 'notice');
    await this.refreshTopics();
    return '';
  }

  async openDirect(form) {
    const username = form.querySelector('#direct-name').value.trim();
    if (!NAME_RULE.test(username)) return `There is no user called “${username}”.`;
    if (this.topics.has(username)) {
      return `“${username}” is a topic, not a user: open it from the list of topics.`;
    }
    if (!this.users.includes(username)) {
      try {
        await this.loadUsers();
      } catch (e) {
        return inWords(e, { action: 'direct', username });
      }
      if (!this.users.includes(username)) return `There is no user called “${username}”.`;
    }
    if (!this.directs.has(username)) this.directs.set(username, { last_seq: 0 });
    this.conv(username).direct = true;
    this.open(username);
    return '';
  }

  // ---- rendering ----

  renderSidebar() {
    const lists = { public: [], private: [], direct: [] };
    for (const topic of this.topics.values()) {
      lists[topic.is_private ? 'private' : 'public'].push(topic.topic_name);
    }
    const directNames = new Set(this.directs.keys());
    for (const conv of this.convs.values()) {
      if (conv.direct && conv.messages.size > 0) directNames.add(conv.name);
    }
    lists.direct = [...directNames].filter((name) => !this.topics.has(name));
    for (const key of Object.keys(lists)) lists[key].sort((a, b) => a.localeCompare(b));

    const item = (name, kind) => {
      const conv = this.convs.get(name);
      const unread = conv ? conv.unread : 0;
      const topic = this.topics.get(name);
      const joined = kind === 'direct' || (topic && topic.member);
      const label = [
        kind === 'direct' ? `Direct messages with ${name}` : name,
        joined ? '' : 'not joined',
        unread ? `${unread} unread` : '',
      ].filter(Boolean).join(', ');
      const button = el(
        'button',
        {
          type: 'button',
          class: `conv${joined ? '' : ' not-joined'}`,
          'data-name': name,
          'aria-current': this.current === name ? 'true' : null,
          'aria-label': label,
        },
        el('span', { class: 'sigil', 'aria-hidden': 'true', text: kind === 'direct' ? '@' : '#' }),
        el('span', { class: 'name', text: name }),
      );
      if (!joined) button.append(el('span', { class: 'tag', 'aria-hidden': 'true', text: 'join' }));
      if (unread) {
        button.append(el('span', { class: 'unread', 'aria-hidden': 'true', text: String(unread) }));
      }
      return el('li', {}, button);
    };
    const fill = (id, names, kind, empty) => {
      const list = $(id);
      const focused = document.activeElement && list.contains(document.activeElement)
        ? document.activeElement.dataset.name
        : null;
      list.replaceChildren(
        ...(names.length ? names.map((n) => item(n, kind)) : [el('li', { class: 'none', text: empty })]),
      );
      if (focused) {
        const again = list.querySelector(`button[data-name="${CSS.escape(focused)}"]`);
        if (again) again.focus();
      }
    };
    fill('public-list', lists.public, 'public', 'No public topics yet.');
    fill('private-list', lists.private, 'private', 'None yet.');
    fill('direct-list', lists.direct, 'direct', 'None yet.');
  }

  renderConversationHeader() {
    const name = this.current;
    const title = $('conv-title');
    const subtitle = $('conv-subtitle');
    const join = $('join-button');
    const invite = $('invite-button');
    const leave = $('leave-button');
    join.hidden = invite.hidden = leave.hidden = true;
    if (!name) {
      title.textContent = 'No conversation open';
      subtitle.textContent = '';
      return;
    }
    const direct = this.isDirect(name);
    if (direct) {
      title.textContent = `@${name}`;
      subtitle.textContent = `Direct messages with ${name}`;
      return;
    }
    const topic = this.topics.get(name);
    title.textContent = `#${name}`;
    if (!topic) {
      subtitle.textContent = 'Topic';
      return;
    }
    const members = topic.members === 1 ? '1 member' : `${topic.members} members`;
    const kind = topic.is_private ? 'Private topic' : 'Public topic';
    const owner = topic.owner ? ` · owner ${topic.owner}` : '';
    subtitle.textContent = `${kind} · ${members}${owner}${topic.member ? '' : ' · you have not joined'}`;
    join.hidden = topic.member;
    invite.hidden = !topic.member;
    leave.hidden = !topic.member;
  }

  renderConversation() {
    this.renderConversationHeader();
    const list = $('messages');
    const input = $('message-input');
    const send = $('send-button');
    this.rendered = { name: this.current, seqs: [], nodes: new Map() };
    list.replaceChildren();
    $('new-below').hidden = true;
    if (!this.current) {
      input.disabled = send.disabled = true;
      input.placeholder = 'Open a conversation to write';
      $('message-label').textContent = 'Message';
      $('older-button').hidden = true;
      $('older-done').hidden = true;
      $('empty-note').hidden = false;
      $('empty-note').textContent = 'Choose a conversation on the left, or start one.';
      this.renderComposerStatus();
      return;
    }
    const conv = this.conv(this.current);
    const direct = this.isDirect(this.current);
    const where = direct ? `@${this.current}` : `#${this.current}`;
    input.disabled = send.disabled = false;
    $('message-label').textContent = `Message to ${where}`;
    const topic = this.topics.get(this.current);
    input.placeholder = !direct && topic && !topic.member
      ? `Join ${where} to write here`
      : `Message ${where}`;
    const fragment = document.createDocumentFragment();
    for (const seq of conv.seqs()) {
      const node = this.messageNode(conv.messages.get(seq));
      this.rendered.seqs.push(seq);
      this.rendered.nodes.set(seq, node);
      fragment.append(node);
    }
    list.append(fragment);
    this.renderOlderRow(conv);
    this.renderEmptyNote(conv);
    this.renderComposerStatus();
    this.scrollToBottom();
  }

  renderOlderRow(conv) {
    if (this.current !== conv.name) return;
    const hasAny = conv.messages.size > 0;
    $('older-button').hidden = !hasAny || !conv.loaded || conv.complete;
    $('older-done').hidden = !hasAny || !conv.loaded || !conv.complete;
  }

  renderEmptyNote(conv) {
    const note = $('empty-note');
    note.hidden = conv.messages.size > 0;
    note.textContent = conv.loaded ? 'No messages yet. Say hello!' : 'Loading…';
  }

  renderComposerStatus() {
    const status = $('composer-status');
    const waiting = this.outbox.length;
    const state = this.link ? this.link.state : 'idle';
    if (waiting && state !== 'open') {
      status.textContent = waiting === 1
        ? 'Disconnected: 1 message will be sent when the connection is back.'
        : `Disconnected: ${waiting} messages will be sent when the connection is back.`;
      status.dataset.kind = 'warn';
    } else if (waiting) {
      status.textContent = 'Sending…';
      status.dataset.kind = '';
    } else if (state !== 'open' && this.everConnected) {
      status.textContent = 'Disconnected: messages you write now are sent once the connection is back.';
      status.dataset.kind = 'warn';
    } else {
      status.textContent = this.current ? 'Enter sends · Shift+Enter starts a new line' : '';
      status.dataset.kind = '';
    }
  }

  messageNode(message) {
    const mine = message.from === this.me.username;
    const classes = ['msg'];
    if (mine) classes.push('mine');
    if (message.pending) classes.push('pending');
    const li = el('li', {
      class: classes.join(' '),
      'data-seq': message.seq,
      'data-topic': message.topic_name,
    });
    const meta = el(
      'p',
      { class: 'meta' },
      el('span', { class: 'from', text: mine ? `${message.from} (you)` : message.from }),
      el('time', { datetime: message.sent_at, title: message.sent_at, text: formatTime(message.sent_at) }),
    );
    if (message.pending) {
      meta.append(el('span', { class: 'badge pending-badge', text: 'arrived while you were away' }));
    }
    meta.append(el('span', { class: 'seq', 'aria-label': `message ${message.seq}`, text: `#${message.seq}` }));
    let body;
    if (typeof message.content === 'string') {
      body = el('div', { class: 'body text' });
      body.textContent = message.content;
    } else {
      body = el('pre', { class: 'body json' });
      body.textContent = JSON.stringify(message.content, null, 2);
    }
    li.append(meta, body);
    const length = body.textContent.length;
    if (length > LONG_MESSAGE || body.textContent.split('\n').length > 24) {
      body.classList.add('folded');
      const more = el('button', { type: 'button', class: 'small more', 'aria-expanded': 'false' }, 'Show all');
      more.addEventListener('click', () => {
        const folded = body.classList.toggle('folded');
        more.textContent = folded ? 'Show all' : 'Show less';
        more.setAttribute('aria-expanded', String(!folded));
      });
      li.append(more);
    }
    return li;
  }

  insertMessage(message) {
    const { seqs, nodes } = this.rendered;
    if (nodes.has(message.seq)) return;
    const scroller = $('scroller');
    const wasAtBottom = this.atBottom();
    const node = this.messageNode(message);
    let low = 0;
    let high = seqs.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (seqs[mid] < message.seq) low = mid + 1;
      else high = mid;
    }
    const list = $('messages');
    if (low === seqs.length) {
      list.append(node);
      seqs.push(message.seq);
      nodes.set(message.seq, node);
      if (wasAtBottom || message.from === this.me.username) this.scrollToBottom();
      else $('new-below').hidden = false;
      if (seqs.length === 1) this.renderOlderRow(this.conv(this.rendered.name));
    } else {
      const top = scroller.scrollTop;
      const height = scroller.scrollHeight;
      list.insertBefore(node, nodes.get(seqs[low]));
      seqs.splice(low, 0, message.seq);
      nodes.set(message.seq, node);
      // Inserted above what is on screen: keep the view where it was.
      if (node.offsetTop < top + scroller.clientHeight / 2) {
        scroller.scrollTop = top + (scroller.scrollHeight - height);
      }
    }
    $('empty-note').hidden = true;
  }

  atBottom() {
    const s = $('scroller');
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  scrollToBottom() {
    const s = $('scroller');
    s.scrollTop = s.scrollHeight;
  }

  // ---- admin ----

  toggleAdmin() {
    const button = $('admin-toggle');
    const showing = button.getAttribute('aria-pressed') === 'true';
    if (!this.admin) {
      this.admin = new AdminView(this.token, () => endSession('Your session has ended. Sign in again.'));
    }
    button.setAttribute('aria-pressed', String(!showing));
    button.textContent = showing ? 'Admin' : 'Back to chat';
    $('chat-view').hidden = !showing;
    $('admin-view').hidden = showing;
    if (showing) this.admin.hide();
    else this.admin.show();
  }
}

new Console().boot();
