// The connection: one WebSocket to the page's own host, and getting it back
// when it drops.
//
// Owns the socket, the connection's state ('connecting' | 'open' |
// 'reconnecting' | 'closed'), the chat protocol the server chose, and the
// reconnect backoff (RFC 6455 section 7.2.3: after an abnormal closure, try
// again after a random delay). It knows nothing of the chat itself: it sends
// the text it is given and hands up what happens through `events`:
//
//   open(again)          the socket opened (again: not the first time)
//   message(data)        a message arrived (data as the browser gave it)
//   close(info)          the socket closed: {wasOpen, leaving, firstFailure, reason}
//   failed(error)        no socket could be made at all; no retry follows
//   state()              `state` changed
//   tick()               a second of the reconnect countdown went by (about)

import { OFFERED_PROTOCOLS, chosenProtocol } from './protocol.js';

// Reconnect backoff: 0.5 s doubling to 10 s, each delay scaled by a random
// 75-100 % so a room full of clients does not return in one wave. The
// count starts over once a connection has stayed up for STABLE_MS.
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10000;
const STABLE_MS = 5000;
const COUNTDOWN_MS = 250;     // how often the "Reconnecting in N s" text is redrawn

// The ws: or wss: URL of the page's own host (wss: on an https: page).
export function socketUrl(location) {
  return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/';
}

// Why a connection ended, in plain words (close codes: docs/protocol.md).
export function closeText(ev) {
  const reason = typeof ev.reason === 'string' ? ev.reason : '';
  switch (ev.code) {
    case 1001: return 'The server went away.';
    case 1008: return 'The server disconnected you' + (reason ? ' (' + reason + ')' : '') + '.';
    case 1009: return 'The server closed the connection: a message was too big.';
    case 1002:
    case 1007: return 'The connection broke (a protocol error).';
    case 1011: return 'The connection timed out or failed on the server.';
    default: return 'Lost the connection to the server.';
  }
}

// The delays between failed connections.
class Backoff {
  constructor(baseMs, maxMs) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.failures = 0;          // failed connections since the last stable one
  }

  next() {
    const delay = Math.min(this.maxMs, this.baseMs * Math.pow(2, this.failures));
    this.failures++;
    return Math.round(delay * (0.75 + 0.25 * Math.random()));
  }

  reset() {
    this.failures = 0;
  }
}

export class Connection {
  constructor(url, events) {
    this.url = url;
    this.events = events;
    this.socket = null;         // the current WebSocket, or null between them
    this.generation = 0;        // counts sockets: tells a later one from this one
    this.state = 'connecting';
    this.protocol = '';         // PROTOCOL_V2 or _V1 once a connection has opened
    this.everOpened = false;    // a later open is a reconnect
    this.leaving = false;       // the page is going away: do not reconnect
    this.reconnectAt = 0;       // Date.now() of the next attempt, while 'reconnecting'
    this.backoff = new Backoff(BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    this.timers = { reconnect: 0, countdown: 0, stable: 0 };
  }

  isOpen() {
    return this.socket !== null && this.state === 'open';
  }

  connect() {
    clearTimeout(this.timers.reconnect);
    clearInterval(this.timers.countdown);
    this.timers.reconnect = this.timers.countdown = 0;
    this.setState('connecting');
    let socket;
    try {
      socket = new WebSocket(this.url, OFFERED_PROTOCOLS);
    } catch (e) {
      // Only a malformed URL or a blocked port throws here; retrying would
      // not help.
      this.setState('closed');
      this.events.failed(e);
      return;
    }
    this.socket = socket;
    this.generation++;
    // Events of a socket that has since been replaced are dropped.
    socket.onopen = () => { if (this.socket === socket) this.opened(); };
    socket.onmessage = (ev) => { if (this.socket === socket) this.events.message(ev.data); };
    socket.onclose = (ev) => { if (this.socket === socket) this.closed(ev); };
    // Every error is followed by a close event, which does the work.
    socket.onerror = () => {};
  }

  // The user asked (or the browser came back online): skip the wait.
  reconnectNow() {
    if (this.state === 'reconnecting' || this.state === 'closed') {
      this.backoff.reset();
      this.connect();
    }
  }

  // Sends one text message; false if there is no open socket to send it on.
  send(text) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(text);
    return true;
  }

  // The page is going away: close cleanly and stay closed.
  leave() {
    this.leaving = true;
    clearTimeout(this.timers.reconnect);
    clearInterval(this.timers.countdown);
    if (this.socket) this.socket.close(1000, 'page closed');
    else this.setState('closed');
  }

  // The page came back (from the back-forward cache): connect afresh.
  resume() {
    this.leaving = false;
    this.backoff.reset();
    this.connect();
  }

  setState(next) {
    this.state = next;
    this.events.state();
  }

  opened() {
    this.protocol = chosenProtocol(this.socket.protocol);
    const again = this.everOpened;
    this.everOpened = true;
    clearTimeout(this.timers.stable);
    this.timers.stable = setTimeout(() => this.backoff.reset(), STABLE_MS);
    this.setState('open');
    this.events.open(again);
  }

  closed(ev) {
    const info = {
      wasOpen: this.state === 'open',
      leaving: this.leaving,
      firstFailure: !this.everOpened && this.backoff.failures === 0,
      reason: closeText(ev || {})
    };
    this.socket = null;
    clearTimeout(this.timers.stable);
    this.events.close(info);
    if (this.leaving) this.setState('closed');
    else this.scheduleReconnect();
  }

  scheduleReconnect() {
    const delay = this.backoff.next();
    this.reconnectAt = Date.now() + delay;
    this.setState('reconnecting');
    this.timers.reconnect = setTimeout(() => this.connect(), delay);
    this.timers.countdown = setInterval(() => this.events.tick(), COUNTDOWN_MS);
  }
}
