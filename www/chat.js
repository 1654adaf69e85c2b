// The rawws chat client: one page, one WebSocket, no framework, no build
// step. This entry module only wires the others together:
//
//   protocol.js    the chat protocols v1 and v2: building and reading messages
//   connection.js  the WebSocket to this page's host, and reconnecting
//   session.js     who we are in the room: joins, renames, the people present
//   view.js        everything drawn on the page (user strings as text only)
//
// and connects the page's forms and buttons to them, and the page's comings
// and goings to the connection. It also sets window.rawwsChat, read-only
// hooks for tests and the curious.

import { Connection, socketUrl } from './connection.js';
import { PROTOCOL_V1 } from './protocol.js';
import { ChatSession } from './session.js';
import { View } from './view.js';

const view = new View(document);

// The status line draws from both the connection and the session.
function showStatus() {
  view.showState({
    state: connection.state,
    everOpened: connection.everOpened,
    joined: session.joined,
    v1: connection.protocol === PROTOCOL_V1,
    reconnectAt: connection.reconnectAt
  });
}

const connection = new Connection(socketUrl(location), {
  open: (again) => session.connected(again),
  message: (data) => session.received(data),
  close: (info) => session.disconnected(info),
  failed: (e) => view.error('Could not open a connection to the chat server: ' + e.message),
  state: showStatus,
  tick: showStatus
});
const session = new ChatSession(view, connection, showStatus);

// --- what the user does --------------------------------------------------

// Enter in a field: a plain keydown does it too (scripts that fire key
// events, and browsers that do not submit a form on Enter). An IME
// composing text keeps its Enter.
function isEnter(ev) {
  return ev.key === 'Enter' && !ev.isComposing && ev.keyCode !== 229;
}

view.el.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  session.sendChat();
});
view.el.input.addEventListener('keydown', (ev) => {
  if (isEnter(ev)) {
    ev.preventDefault();
    session.sendChat();
  }
});

view.el.nameForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  session.applyName();
});
view.el.username.addEventListener('keydown', (ev) => {
  if (isEnter(ev)) {
    ev.preventDefault();
    session.applyName();
    view.focusInput();
  }
});
view.el.username.addEventListener('change', () => session.applyName());

view.el.reconnect.addEventListener('click', () => connection.reconnectNow());

// --- the page's comings and goings -------------------------------------------

// Leave cleanly when the page goes away; come back if it is restored.
window.addEventListener('pagehide', () => connection.leave());
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted) connection.resume();
});
window.addEventListener('online', () => connection.reconnectNow());

// Read-only hooks for tests and the curious.
Object.defineProperty(window, 'rawwsChat', {
  value: Object.freeze({
    state: () => connection.state,
    protocol: () => connection.protocol,
    joined: () => session.joined,
    username: () => session.me.name,
    users: () => session.roster.names.slice()
  })
});

// --- start ---------------------------------------------------------------------

session.start();
view.focusInput();
connection.connect();
