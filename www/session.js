// The chat session: who we are in the room and what the user does there.
//
// Owns the name the server holds for us and the joins and renames in flight
// (with the retries and fallbacks around a taken name), the people present,
// the messages typed before a join was done, and the server's limits. It
// acts on each server message (one handler per type and version, below) and
// on the user's send and rename; it draws through the view and sends through
// the connection, building and reading messages with protocol.js.

import {
  PROTOCOL_V1, PROTOCOL_V2, NAME_INVALID, NAME_TAKEN, NOT_JOINED,
  chatMessage, errorText, isVariantOf, joinMessage, readServerMessage, renameMessage
} from './protocol.js';

const STORAGE_KEY = 'rawws-chat-username';

// A v2 join refused as name-taken right after a reconnect is most likely
// our own old connection, which the server has not yet seen drop: retry
// the same name a few times before asking the user for another.
const REJOIN_RETRIES = 3;
const REJOIN_RETRY_MS = 1000;

// --- the name kept in this browser -----------------------------------------

function keptName() {
  try {
    const name = window.localStorage.getItem(STORAGE_KEY);
    return typeof name === 'string' ? name.trim() : '';
  } catch (e) {
    return '';                  // storage disabled: fine, use a default
  }
}

function keepName(name) {
  try {
    if (name) window.localStorage.setItem(STORAGE_KEY, name);
  } catch (e) { /* storage disabled or full: the name just is not kept */ }
}

function guestName() {
  return 'Guest-' + String(1000 + Math.floor(Math.random() * 9000));
}

// --- the people present ------------------------------------------------------

class Roster {
  constructor() {
    this.names = [];            // in join order
  }

  add(name) {
    if (name && this.names.indexOf(name) < 0) this.names.push(name);
  }

  remove(name) {
    const i = this.names.indexOf(name);
    if (i >= 0) this.names.splice(i, 1);
  }

  rename(from, to) {
    const i = this.names.indexOf(from);
    if (i >= 0) this.names[i] = to;
    else if (this.names.indexOf(to) < 0) this.names.push(to);
  }

  // A welcome's list, with us in it.
  replace(names, me) {
    this.names = names.slice();
    if (this.names.indexOf(me) < 0) this.names.push(me);
  }

  clear() {
    this.names = [];
  }
}

// --- the session ---------------------------------------------------------------

// Which method handles each server message type, per protocol version
// (protocol.js reads only these types, so every message read has one).
const HANDLERS = {
  [PROTOCOL_V2]: {
    'chat-welcome': (session, p) => session.onWelcome(p),
    'chat-join': (session, p) => session.onJoin(p),
    'chat-message': (session, p) => session.onMessage(p),
    'chat-rename': (session, p) => session.onRename(p),
    'chat-leave': (session, p) => session.onLeave(p),
    'chat-error': (session, p) => session.onError(p)
  },
  [PROTOCOL_V1]: {
    'chat-join': (session, p) => session.onJoinV1(p),
    'chat-message': (session, p) => session.onMessageV1(p),
    'chat-leave': (session, p) => session.onLeaveV1(p)
  }
};

export class ChatSession {
  // `refreshStatus()` redraws the connection's status, which tells whether
  // we joined.
  constructor(view, connection, refreshStatus) {
    this.view = view;
    this.connection = connection;
    this.refreshStatus = refreshStatus;

    // Who the server says we are.
    this.me = {
      joined: false,            // the server holds a name for this connection
      name: '',                 // that name
      before: ''                // the name held before the last drop (for rejoin retries)
    };
    // The chat-join in flight, and what to say once it is done.
    this.joining = {
      name: null,               // the name it asked for (null: none in flight)
      mode: 'auto',             // who chose that name: 'auto', 'fallback', 'user'
      retries: 0,               // v2: rejoins of a name our old connection held
      note: '',                 // v2: said after the welcome (which clears the view)
      dropNote: ''              // v2: why the last connection ended, said after the welcome
    };
    this.renames = [];          // v2: names asked for by chat-rename, in order
    this.reclaim = null;        // v2: {name, fallback} to take back once it is free
    this.outbox = [];           // v2: messages typed while a join was in flight
    this.v1 = {
      renameFrom: '',           // our old name, between its leave and join
      asked: '',                // the name sent with the last message
      lastSent: null            // {name, text} of the last message sent
    };
    this.roster = new Roster();
    this.limits = { maxMessageLength: 0, maxUsernameLength: 0 };
  }

  get protocol() { return this.connection.protocol; }
  get joined() { return this.me.joined; }
  get isV2() { return this.connection.protocol === PROTOCOL_V2; }

  // Before the first connection: the kept name (or a default) in the field.
  start() {
    this.view.showName(keptName() || guestName());
    this.showUsers();
  }

  showUsers() {
    this.view.showUsers(this.roster.names, this.me.joined ? this.me.name : null);
  }

  // Is `name` the one the server holds for us?
  isMe(name) {
    return this.me.joined && name === this.me.name;
  }

  // --- the connection's events ---------------------------------------------

  connected(again) {
    this.me.joined = false;
    this.renames = [];
    this.v1.renameFrom = '';
    this.view.showUsersNote(!this.isV2);
    if (!this.isV2) {
      this.roster.clear();
      this.showUsers();
      if (again) this.view.info('Reconnected.');
      this.joining.dropNote = '';
    }
    this.joining.retries = 0;
    this.joining.note = '';
    this.reclaim = null;
    this.join();
  }

  disconnected(info) {
    if (this.me.joined) this.me.before = this.me.name;
    this.me.joined = false;
    this.joining.name = null;
    this.renames = [];
    if (info.leaving) return;
    if (info.firstFailure) this.view.info('Could not reach the chat server; retrying.');
    if (info.wasOpen) {
      this.joining.dropNote = info.reason;
      this.view.info(info.reason + ' Reconnecting…');
      this.showUsers();
    }
  }

  received(data) {
    const msg = readServerMessage(data, this.protocol);
    if (msg) HANDLERS[this.isV2 ? PROTOCOL_V2 : PROTOCOL_V1][msg.type](this, msg.payload);
  }

  // --- joining ---------------------------------------------------------------

  // Join under the name in the field (or a kept or default one).
  join() {
    const name = this.view.typedName() || this.me.name || keptName() || guestName();
    this.view.showName(name);
    this.sendJoin(name, 'auto');
  }

  // mode 'auto': the page chose the name (kept, default, or held before a
  // drop); 'fallback': a fresh default after an auto name was refused;
  // 'user': the user just typed it.
  sendJoin(name, mode) {
    this.joining.name = name;
    this.joining.mode = mode;
    this.connection.send(joinMessage(name));
    if (!this.isV2) {
      // v1 has no welcome: the join is done once sent. The server may hand
      // us a free variant of the name; the echo of our join tells (see
      // onJoinV1). joining.name stays set until that echo.
      this.me.joined = true;
      this.me.name = this.v1.asked = name;
      keepName(name);
    }
    this.refreshStatus();
  }

  // --- v2 server messages ----------------------------------------------------

  onWelcome(p) {
    const asked = this.joining.name;
    const typed = this.view.typedName();
    this.me.joined = true;
    this.joining.name = null;
    this.joining.retries = 0;
    this.me.name = p.username || asked || this.me.name;
    if (this.joining.mode !== 'fallback') keepName(this.me.name);
    this.view.showName(this.me.name);
    this.view.clearNameFlag();

    if (p.limits.maxMessageLength > 0) this.limits.maxMessageLength = p.limits.maxMessageLength;
    if (p.limits.maxUsernameLength > 0) this.limits.maxUsernameLength = p.limits.maxUsernameLength;
    this.view.setLimits(p.limits);

    this.roster.replace(p.users, this.me.name);
    this.showUsers();

    // The welcome carries the recent history: it replaces what is shown,
    // so a reconnect does not draw the same messages twice.
    this.view.showHistory(p.history, this.me.name);
    this.refreshStatus();
    if (this.joining.dropNote) this.view.info(this.joining.dropNote + ' Reconnected.');
    if (this.joining.note) this.view.info(this.joining.note);
    this.joining.dropNote = this.joining.note = '';

    // The user changed the name while the join was in flight: ask for it.
    if (typed && typed !== asked && typed !== this.me.name) {
      this.view.showName(typed);
      this.applyName();
    }
    const queued = this.outbox;
    this.outbox = [];
    for (const text of queued) this.connection.send(chatMessage(text));
  }

  onJoin(p) {
    this.roster.add(p.username);
    this.showUsers();
    this.view.system('join', p.time, [{ name: p.username }, ' joined'], { user: p.username });
  }

  onMessage(p) {
    this.view.message(p, this.isMe(p.username));
  }

  onRename(p) {
    const from = p.from, to = p.to;
    const mine = this.isMe(from);
    if (mine) {
      this.me.name = to;
      const i = this.renames.indexOf(to);
      if (i >= 0) this.renames.splice(0, i + 1);
      // Show the confirmed name unless the user is already typing another.
      if (!this.view.isEditingName() || this.view.typedName() === to) {
        this.view.showName(to);
      }
      keepName(to);
      this.view.clearNameFlag();
    }
    this.roster.rename(from, to);
    this.showUsers();
    this.view.system('rename', p.time,
      mine ? ['You are now ', { name: to }]
           : [{ name: from }, ' is now ', { name: to }],
      { from, to });
  }

  onLeave(p) {
    const name = p.username;
    this.roster.remove(name);
    this.showUsers();
    this.view.system('leave', p.time, [{ name }, ' left'], { user: name });
    if (this.reclaim && name === this.reclaim.name) {
      const r = this.reclaim;
      this.reclaim = null;
      if (this.isMe(r.fallback) && this.view.typedName() === r.fallback) {
        this.view.showName(r.name);
        this.applyName();
      }
    }
  }

  onError(p) {
    if (p.code === NAME_TAKEN || p.code === NAME_INVALID) {
      this.nameRefused(p.code, p.type, p.message);
      return;
    }
    if (p.code === NOT_JOINED && !this.joining.name) {
      // The server lost track of our join: join again.
      this.join();
    }
    this.view.error(this.errorText(p.code, p.message), p.code);
  }

  // A chat-join or chat-rename was refused for its name.
  nameRefused(code, type, serverText) {
    let asked;
    if (type === 'chat-join' || (!type && this.joining.name)) {
      asked = this.joining.name || this.view.typedName();
      this.joining.name = null;
      const ours = code === NAME_TAKEN && asked === this.me.before;
      if (this.joining.mode === 'auto' && ours && this.joining.retries < REJOIN_RETRIES) {
        // Probably our own connection from before the drop: try again soon.
        this.retryJoin(asked);
        return;
      }
      if (this.joining.mode === 'auto') {
        this.joinAsGuest(asked, code, ours);
        return;
      }
      // Not joined: keep the refused name in the field, flagged, so the user
      // can fix it; messages typed meanwhile go back into the input box.
      this.view.showName(asked);
      this.view.flagName();
      if (this.outbox.length && !this.view.draft()) this.view.setDraft(this.outbox[0]);
      this.outbox = [];
      this.refreshStatus();
    } else {
      asked = this.renames.shift() || this.view.typedName();
      // Still joined under the held name: show that name again.
      this.view.showName(this.me.name);
      this.view.flagName();
    }
    this.view.error(this.errorText(code, serverText, asked), code);
  }

  retryJoin(asked) {
    const retries = ++this.joining.retries;
    this.joining.name = asked;
    const generation = this.connection.generation;
    setTimeout(() => {
      if (this.connection.generation === generation && this.connection.state === 'open' &&
          !this.me.joined && this.joining.name === asked) {
        this.sendJoin(this.view.typedName() || asked, 'auto');
      }
    }, REJOIN_RETRY_MS * retries);
  }

  // A kept name that someone (perhaps this page in another tab) holds, or
  // one this server does not accept: join under a fresh default and say so;
  // the kept name stays kept. `ours`: our own old connection holds it.
  joinAsGuest(asked, code, ours) {
    const fresh = guestName();
    this.joining.note = (ours
      ? 'The name ' + asked + ' is still held by your old connection'
      : code === NAME_TAKEN
        ? 'The name ' + asked + ' is taken (perhaps in another tab)'
        : 'The name ' + asked + ' cannot be used here') +
      ', so you joined as ' + fresh + '. ' +
      (ours ? 'You get it back once it is free.' : 'Change your name any time.');
    // Our own old connection lets go of the name sooner or later: then
    // take it back (see onLeave), unless the user picked another.
    this.reclaim = ours ? { name: asked, fallback: fresh } : null;
    this.view.showName(fresh);
    this.sendJoin(fresh, 'fallback');
  }

  errorText(code, serverText, name) {
    return errorText(code, serverText, name, {
      maxMessageLength: this.limits.maxMessageLength,
      maxUsernameLength: this.limits.maxUsernameLength || this.view.nameMaxLength()
    });
  }

  // --- v1 server messages ----------------------------------------------------

  onJoinV1(p) {
    const name = p.username;
    const now = new Date();
    if (this.joining.name && isVariantOf(name, this.joining.name)) {
      // Our own join coming back, perhaps under a free variant of the name.
      if (name !== this.joining.name) {
        this.view.info('The server could not give you the name ' + this.joining.name +
          ', so it calls you ' + name + '.');
        this.view.showName(name);
      }
      this.me.name = this.v1.asked = name;
      this.joining.name = null;
    } else if (this.v1.renameFrom && name === this.v1.asked) {
      // The second half of our rename: leave(old) then join(new).
      const from = this.v1.renameFrom;
      this.v1.renameFrom = '';
      this.me.name = name;
      this.roster.add(name);
      this.showUsers();
      this.view.system('rename', now, ['You are now ', { name }], { from, to: name });
      return;
    }
    this.roster.add(name);
    this.showUsers();
    this.view.system('join', now, [{ name }, ' joined'], { user: name });
  }

  onMessageV1(p) {
    this.view.message(p, this.isMe(p.username));
    const sent = this.v1.lastSent;
    if (sent && p.username === this.me.name && p.message.trim() === sent.text) {
      this.v1.lastSent = null;
      if (sent.name !== this.me.name) {
        // Our message came back under the old name: v1's way of saying
        // the new one is taken.
        this.v1.asked = this.me.name;
        this.v1.renameFrom = '';
        if (this.view.typedName() === sent.name) this.view.showName(this.me.name);
        keepName(this.me.name);
        this.view.flagName();
        this.view.error(this.errorText(NAME_TAKEN, '', sent.name), NAME_TAKEN);
      }
    }
  }

  onLeaveV1(p) {
    const name = p.username;
    this.roster.remove(name);
    this.showUsers();
    if (this.me.joined && name === this.me.name && this.v1.asked && this.v1.asked !== this.me.name) {
      // The server never tells us that we left, so this leave is the first
      // half of our own rename; the join of the new name follows.
      this.v1.renameFrom = name;
      return;
    }
    this.view.system('leave', new Date(), [{ name }, ' left'], { user: name });
  }

  // --- what the user does ----------------------------------------------------

  // Apply the name in #chat-username: on v2 ask the server for it now; on v1
  // it goes out with the next message. Safe to call repeatedly.
  applyName() {
    const name = this.view.typedName();
    if (!name) {
      this.view.showName(this.me.name || keptName() || guestName());
      this.view.clearNameFlag();
      return;
    }
    if (this.view.nameField() !== name) this.view.showName(name);
    keepName(name);
    if (!this.connection.isOpen() || !this.isV2) return;
    if (!this.me.joined) {
      if (!this.joining.name) this.sendJoin(name, 'user');
      return;
    }
    const last = this.renames.length ? this.renames[this.renames.length - 1] : this.me.name;
    if (name === last) return;
    this.renames.push(name);
    this.connection.send(renameMessage(name));
  }

  // Send what is in the message box.
  sendChat() {
    const text = this.view.draft();
    if (!text.trim()) {
      this.view.setDraft('');
      this.view.focusInput();
      return;
    }
    if (!this.connection.isOpen()) {
      this.view.info('Not connected right now; your message is still in the box. ' +
        'Send it again once the chat is back.');
      this.view.focusInput();
      return;
    }
    if (this.isV2) {
      this.applyName();                 // may send chat-rename or chat-join
      if (this.me.joined) this.connection.send(chatMessage(text));
      else this.outbox.push(text);      // sent once the welcome arrives
    } else {
      const name = this.view.typedName() || this.me.name;
      this.view.showName(name);
      keepName(name);
      this.v1.asked = name;
      this.v1.lastSent = { name, text: text.trim() };
      this.connection.send(chatMessage(text, name));
    }
    this.view.setDraft('');
    this.view.focusInput();
  }
}
