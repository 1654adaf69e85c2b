// The chat protocols on the wire: building what the page sends and reading
// what the server sends, for both versions (docs/protocol.md has every
// message and field).
//
//   beej-chat-protocol-v2  welcome with users, history and limits; server ids
//                          and times; chat-rename; chat-error for refusals
//   beej-chat-protocol     the original: join, message, leave, nothing else
//
// Owns no state and touches neither the page nor the socket: messages go in
// and out as JSON text, and a server message comes out of readServerMessage()
// with a payload whose fields have the right types (a missing or wrong-typed
// field reads as '' or null), so the rest of the page never checks a type.

export const PROTOCOL_V2 = 'beej-chat-protocol-v2';
export const PROTOCOL_V1 = 'beej-chat-protocol';

// Offered in this order: the server picks v2 when it speaks it.
export const OFFERED_PROTOCOLS = [PROTOCOL_V2, PROTOCOL_V1];

// The chat-error codes the page acts on (it shows every code; see errorText).
export const NAME_TAKEN = 'name-taken';
export const NAME_INVALID = 'name-invalid';
export const NOT_JOINED = 'not-joined';

// The version a connection speaks, from the subprotocol the server chose.
// A server that chose none is an old one: it speaks v1.
export function chosenProtocol(subprotocol) {
  return subprotocol === PROTOCOL_V2 ? PROTOCOL_V2 : PROTOCOL_V1;
}

// --- what the page sends -------------------------------------------------

// Every message is one text message: {"type": ..., "payload": {...}}.
function encode(type, payload) {
  return JSON.stringify({ type, payload });
}

export function joinMessage(username) {
  return encode('chat-join', { username });
}

// v2 knows who is sending; v1 is told with every message.
export function chatMessage(message, username) {
  return encode('chat-message', username === undefined ? { message } : { username, message });
}

// v2 only.
export function renameMessage(username) {
  return encode('chat-rename', { username });
}

// --- what the server sends -----------------------------------------------

function str(v) {
  return typeof v === 'string' ? v : '';
}

// A server time (milliseconds since the epoch) as a Date, or null.
function time(v) {
  return typeof v === 'number' && isFinite(v) ? new Date(v) : null;
}

function positive(v) {
  return v > 0 ? v : 0;
}

// One chat message: a chat-message's payload, or an entry of a welcome's
// history.
function chatLine(p) {
  return {
    id: typeof p.id === 'number' ? p.id : null,
    username: str(p.username),
    message: str(p.message),
    time: time(p.time)
  };
}

// A join or leave: {username, time}, or null without a name.
function named(p) {
  const username = str(p.username);
  return username ? { username, time: time(p.time) } : null;
}

// One reader per message type. A reader returns the fields the page uses,
// or null for a message that lacks one it cannot do without (a join with no
// name), which is then ignored.
const READERS_V2 = new Map([
  ['chat-welcome', (p) => {
    const limits = p.limits && typeof p.limits === 'object' ? p.limits : {};
    return {
      username: str(p.username),
      users: Array.isArray(p.users) ? p.users.filter((u) => typeof u === 'string') : [],
      history: (Array.isArray(p.history) ? p.history : [])
        .filter((m) => m && typeof m === 'object').map(chatLine),
      limits: {
        maxMessageLength: positive(limits.maxMessageLength),
        maxUsernameLength: positive(limits.maxUsernameLength)
      }
    };
  }],
  ['chat-join', named],
  ['chat-message', chatLine],
  ['chat-rename', (p) => {
    const from = str(p.from), to = str(p.to);
    return from && to ? { from, to, time: time(p.time) } : null;
  }],
  ['chat-leave', named],
  ['chat-error', (p) => ({ code: str(p.code), type: str(p.type), message: str(p.message) })]
]);

// v1 has three types, and no ids or times: those fields read as null.
const READERS_V1 = new Map([
  ['chat-join', (p) => named({ username: p.username })],
  ['chat-message', (p) => chatLine({ username: p.username, message: p.message })],
  ['chat-leave', (p) => named({ username: p.username })]
]);

// A server message as {type, payload}, its payload holding only the fields
// the page uses, typed; or null when there is nothing to
// act on: not text, not JSON, not an object with a string type, a type this
// version does not have, or a required field missing. The chat is text only.
export function readServerMessage(data, protocol) {
  if (typeof data !== 'string') return null;
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (e) {
    return null;
  }
  if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return null;
  const readers = protocol === PROTOCOL_V2 ? READERS_V2 : READERS_V1;
  const read = readers.get(msg.type);
  if (!read) return null;
  const payload = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
  const fields = read(payload);
  return fields && { type: msg.type, payload: fields };
}

// --- v1 names ------------------------------------------------------------

// Is `name` what a v1 server makes of a join asking for `asked`? It cuts
// an over-long name to fit, and gives a taken one its first free variant
// `Name (2)`, the base cut so the variant fits too (docs/protocol.md).
export function isVariantOf(name, asked) {
  const m = /^(.+) \(\d+\)$/.exec(name);
  const base = m ? m[1] : name;
  return base === asked ||
    (asked.indexOf(base) === 0 && base.length >= Math.min(asked.length, 8));
}

// --- chat-error codes in plain words -------------------------------------

// Every chat-error code of docs/protocol.md, in words for the user. `name`
// is the name a refused join or rename asked for; `limits` holds
// maxMessageLength (0: unknown) and maxUsernameLength.
export function errorText(code, serverText, name, limits) {
  const maxMsg = limits.maxMessageLength;
  const maxName = limits.maxUsernameLength;
  switch (code) {
    case 'bad-json':
      return 'The server could not read a message from this page (it was not valid JSON).';
    case 'bad-envelope':
      return 'The server could not understand a message from this page.';
    case 'unknown-type':
      return 'The server does not know that kind of message.';
    case 'bad-field':
      return 'A message from this page was missing something the server needs.';
    case NOT_JOINED:
      return 'You had not joined the chat yet; joining now. Please send that again.';
    case 'already-joined':
      return 'You are already in the chat.';
    case NAME_INVALID:
      return 'The name ' + (name ? '"' + name + '" ' : '') + 'cannot be used: a name needs ' +
        '1 to ' + maxName + ' characters and no control characters.';
    case NAME_TAKEN:
      return 'The name ' + (name || 'you chose') + ' is taken; pick another.';
    case 'message-empty':
      return 'Empty messages are not sent.';
    case 'message-too-long':
      return 'That message is too long' +
        (maxMsg ? ' (the limit is ' + maxMsg + ' characters)' : '') + ', so it was not sent.';
    case 'rate-limited':
      return 'You are sending messages too fast; that one was dropped. Wait a moment and try again.';
    case 'binary-unsupported':
      return 'The chat takes text messages only.';
    default:
      return serverText || ('The server refused that (' + (code || 'no reason given') + ').');
  }
}
