// The rawws chat client: one page, one WebSocket, no framework.
//
// The page offers both chat protocols and lets the server choose:
//   beej-chat-protocol-v2  welcome with users, history and limits; server ids
//                          and times; chat-rename; chat-error for refusals
//   beej-chat-protocol     the original: join, message, leave, nothing else
// (docs/protocol.md has every message and field.)
//
// How the pieces fit:
//   connect() / scheduleReconnect()  the connection and its backoff
//   onOpen() / onMessage()           join, then dispatch server messages
//   HANDLERS_V2 / HANDLERS_V1        one function per server message type
//   sendChat() / applyName()         what the user does
//   append*()                        everything drawn into #chat-output
//
// Every string that came from the network or the user goes into the page as
// text (textContent / createTextNode), never as HTML.
(function () {
  'use strict';

  var PROTOCOL_V2 = 'beej-chat-protocol-v2';
  var PROTOCOL_V1 = 'beej-chat-protocol';
  var STORAGE_KEY = 'rawws-chat-username';

  // Reconnect backoff: 0.5 s doubling to 10 s, each delay scaled by a random
  // 75-100 % so a room full of clients does not return in one wave. The
  // counter starts over once a connection has stayed up for STABLE_MS.
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var STABLE_MS = 5000;

  // A v2 join refused as name-taken right after a reconnect is most likely
  // our own old connection, which the server has not yet seen drop: retry
  // the same name a few times before asking the user for another.
  var REJOIN_RETRIES = 3;
  var REJOIN_RETRY_MS = 1000;

  var MAX_LINES = 1000;         // oldest lines are dropped past this
  var BOTTOM_SLACK_PX = 40;     // "at the bottom" within this many pixels

  // --- the page ----------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  var el = {
    output: $('chat-output'),
    username: $('chat-username'),
    input: $('chat-input'),
    send: $('chat-send'),
    form: $('chat-form'),
    nameForm: $('chat-name-form'),
    status: $('chat-status'),
    statusText: $('chat-status-text'),
    reconnect: $('chat-reconnect'),
    users: $('chat-users'),
    usersPanel: $('chat-users-panel'),
    usersToggle: $('chat-users-toggle'),
    usersCount: $('chat-users-count'),
    usersCountToggle: $('chat-users-count-toggle'),
    usersNote: $('chat-users-note'),
    jump: $('chat-jump')
  };

  // --- state ---------------------------------------------------------------

  var ws = null;
  var state = 'connecting';     // 'connecting' | 'open' | 'reconnecting' | 'closed'
  var protocol = '';            // the subprotocol of the open connection
  var everOpened = false;       // a later open is a reconnect
  var attempt = 0;              // failed connections since the last stable one
  var reconnectTimer = 0;
  var countdownTimer = 0;
  var stableTimer = 0;
  var reconnectAt = 0;
  var leaving = false;          // the page is going away: do not reconnect

  var joined = false;           // the server holds a name for this connection
  var joinPending = null;       // the name a chat-join in flight asked for
  var joinMode = 'auto';        // who chose that name: 'auto', 'fallback', 'user'
  var joinNote = '';            // v2: said after the welcome (which clears the view)
  var reclaim = null;           // v2: {name, fallback} to take back once it is free
  var dropNote = '';            // v2: why the last connection ended, said after the welcome
  var heldName = '';            // the name the server holds for us
  var lastHeldName = '';        // held before the last drop (for rejoin retries)
  var rejoinRetries = 0;
  var renamePending = [];       // v2: names asked for by chat-rename, in order
  var outbox = [];              // v2: messages typed while a join was in flight
  var v1RenameFrom = '';        // v1: our old name, between its leave and join
  var v1Asked = '';             // v1: the name sent with the last message
  var v1LastSent = null;        // v1: {name, text} of the last message sent

  var users = [];               // names present, in join order
  var limits = { maxMessageLength: 0, maxUsernameLength: 0 };

  var unread = 0;
  var baseTitle = document.title;

  // --- small helpers -----------------------------------------------------

  function str(v) {
    return typeof v === 'string' ? v : '';
  }

  function loadName() {
    try {
      return str(window.localStorage.getItem(STORAGE_KEY)).trim();
    } catch (e) {
      return '';                // storage disabled: fine, use a default
    }
  }

  function saveName(name) {
    try {
      if (name) window.localStorage.setItem(STORAGE_KEY, name);
    } catch (e) { /* storage disabled or full: the name just is not kept */ }
  }

  function defaultName() {
    return 'Guest-' + String(1000 + Math.floor(Math.random() * 9000));
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }

  // HH:MM in local time.
  function clock(d) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()); }

  function timeOf(payload) {
    var t = payload && payload.time;
    return typeof t === 'number' && isFinite(t) ? new Date(t) : new Date();
  }

  // A stable colour slot (0-7) for a name, so each person keeps one colour.
  function colourSlot(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
    return ((h % 8) + 8) % 8;
  }

  function desiredName() {
    return el.username.value.trim();
  }

  // --- drawing into #chat-output ----------------------------------------

  function isAtBottom() {
    var o = el.output;
    return o.scrollHeight - o.scrollTop - o.clientHeight <= BOTTOM_SLACK_PX;
  }

  function scrollToBottom() {
    el.output.scrollTop = el.output.scrollHeight;
    el.jump.hidden = true;
  }

  function timeElement(date) {
    var t = document.createElement('time');
    t.className = 'msg-time';
    t.dateTime = date.toISOString();
    t.title = date.toLocaleString();
    t.textContent = clock(date);
    return t;
  }

  function span(className, text) {
    var s = document.createElement('span');
    s.className = className;
    s.textContent = text;
    return s;
  }

  // Appends one line; keeps the view at the bottom if it was there (or if
  // `follow` says so), else offers the "new messages" button.
  function appendLine(line, follow) {
    var stick = follow || isAtBottom();
    el.output.appendChild(line);
    while (el.output.childElementCount > MAX_LINES) {
      el.output.removeChild(el.output.firstElementChild);
    }
    if (stick) scrollToBottom();
    else el.jump.hidden = false;
    return line;
  }

  function messageLine(p) {
    var user = str(p.username);
    var line = document.createElement('div');
    line.className = 'msg';
    line.dataset.kind = 'message';
    line.dataset.user = user;
    if (typeof p.id === 'number') line.dataset.id = String(p.id);
    if (joined && user === heldName) line.classList.add('mine');
    var who = span('msg-user c' + colourSlot(user), user);
    line.appendChild(timeElement(timeOf(p)));
    line.appendChild(who);
    line.appendChild(span('msg-text', str(p.message)));
    return line;
  }

  function appendMessage(p) {
    var mine = joined && str(p.username) === heldName;
    appendLine(messageLine(p), mine);
    if (document.hidden) {
      unread++;
      document.title = '(' + unread + ') ' + baseTitle;
    }
  }

  // A system line: parts is a list of plain strings and {name: ...} objects;
  // names are set in bold. extra holds data-* attributes.
  function appendSystem(kind, date, parts, extra) {
    var line = document.createElement('div');
    line.className = 'msg system';
    line.dataset.kind = kind;
    Object.keys(extra || {}).forEach(function (k) { line.dataset[k] = extra[k]; });
    line.appendChild(timeElement(date));
    var text = document.createElement('span');
    text.className = 'msg-text';
    parts.forEach(function (part) {
      if (typeof part === 'string') {
        text.appendChild(document.createTextNode(part));
      } else {
        var b = document.createElement('b');
        b.className = 'msg-name';
        b.textContent = part.name;
        text.appendChild(b);
      }
    });
    line.appendChild(text);
    return appendLine(line, false);
  }

  function appendError(text, code) {
    var line = document.createElement('div');
    line.className = 'msg error';
    line.dataset.kind = 'error';
    if (code) line.dataset.code = code;
    line.setAttribute('role', 'alert');
    line.appendChild(timeElement(new Date()));
    line.appendChild(span('msg-text', text));
    return appendLine(line, true);
  }

  function appendInfo(text) {
    var line = document.createElement('div');
    line.className = 'msg info';
    line.dataset.kind = 'info';
    line.appendChild(timeElement(new Date()));
    line.appendChild(span('msg-text', text));
    return appendLine(line, false);
  }

  function clearOutput() {
    while (el.output.firstChild) el.output.removeChild(el.output.firstChild);
    el.jump.hidden = true;
  }

  // --- the user list -----------------------------------------------------

  function renderUsers() {
    var list = document.createDocumentFragment();
    users.forEach(function (name) {
      var li = document.createElement('li');
      li.className = 'user';
      li.dataset.user = name;
      li.appendChild(span('user-dot c' + colourSlot(name), ''));
      li.appendChild(span('user-name', name));
      if (joined && name === heldName) {
        li.classList.add('me');
        li.appendChild(span('user-you', ' (you)'));
      }
      list.appendChild(li);
    });
    while (el.users.firstChild) el.users.removeChild(el.users.firstChild);
    el.users.appendChild(list);
    el.usersCount.textContent = String(users.length);
    el.usersCountToggle.textContent = String(users.length);
  }

  function addUser(name) {
    if (name && users.indexOf(name) < 0) users.push(name);
    renderUsers();
  }

  function removeUser(name) {
    var i = users.indexOf(name);
    if (i >= 0) users.splice(i, 1);
    renderUsers();
  }

  function renameUser(from, to) {
    var i = users.indexOf(from);
    if (i >= 0) users[i] = to;
    else if (users.indexOf(to) < 0) users.push(to);
    renderUsers();
  }

  // --- connection state shown to the user --------------------------------

  function setState(next) {
    state = next;
    el.status.dataset.state = next;
    el.reconnect.hidden = !(next === 'reconnecting' || next === 'closed');
    el.usersPanel.classList.toggle('stale', next !== 'open');
    updateStatusText();
  }

  function updateStatusText() {
    var text;
    if (state === 'connecting') {
      text = everOpened ? 'Reconnecting…' : 'Connecting…';
    } else if (state === 'open') {
      text = joined ? 'Connected' : 'Connected, not joined';
      if (protocol === PROTOCOL_V1) text += ' (v1)';
    } else if (state === 'reconnecting') {
      var s = Math.max(1, Math.ceil((reconnectAt - Date.now()) / 1000));
      text = 'Reconnecting in ' + s + ' s';
    } else {
      text = 'Disconnected';
    }
    el.statusText.textContent = text;
  }

  // --- the connection ------------------------------------------------------

  function socketUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/';
  }

  function connect() {
    clearTimeout(reconnectTimer);
    clearInterval(countdownTimer);
    reconnectTimer = countdownTimer = 0;
    setState('connecting');
    var sock;
    try {
      sock = new WebSocket(socketUrl(), [PROTOCOL_V2, PROTOCOL_V1]);
    } catch (e) {
      // Only a malformed URL or a blocked port throws here; retrying would
      // not help.
      setState('closed');
      appendError('Could not open a connection to the chat server: ' + e.message);
      return;
    }
    ws = sock;
    sock.onopen = function () { if (ws === sock) onOpen(); };
    sock.onmessage = function (ev) { if (ws === sock) onMessage(ev); };
    sock.onclose = function (ev) { if (ws === sock) onClose(ev); };
    // Every error is followed by a close event, which does the work.
    sock.onerror = function () {};
  }

  function scheduleReconnect() {
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, attempt));
    delay = Math.round(delay * (0.75 + 0.25 * Math.random()));
    attempt++;
    reconnectAt = Date.now() + delay;
    setState('reconnecting');
    reconnectTimer = setTimeout(connect, delay);
    countdownTimer = setInterval(updateStatusText, 250);
  }

  function reconnectNow() {
    if (state === 'reconnecting' || state === 'closed') {
      attempt = 0;
      connect();
    }
  }

  function send(type, payload) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ type: type, payload: payload }));
    return true;
  }

  function onOpen() {
    protocol = ws.protocol === PROTOCOL_V2 ? PROTOCOL_V2 : PROTOCOL_V1;
    var again = everOpened;
    everOpened = true;
    clearTimeout(stableTimer);
    stableTimer = setTimeout(function () { attempt = 0; }, STABLE_MS);

    joined = false;
    renamePending = [];
    v1RenameFrom = '';
    el.usersNote.hidden = protocol !== PROTOCOL_V1;
    if (protocol === PROTOCOL_V1) {
      users = [];
      renderUsers();
      if (again) appendInfo('Reconnected.');
      dropNote = '';
    }
    rejoinRetries = 0;
    joinNote = '';
    reclaim = null;
    setState('open');
    join();
  }

  // Join under the name in the field (or a kept or default one).
  function join() {
    var name = desiredName() || heldName || loadName() || defaultName();
    el.username.value = name;
    sendJoin(name, 'auto');
  }

  // mode 'auto': the page chose the name (kept, default, or held before a
  // drop); 'fallback': a fresh default after an auto name was refused;
  // 'user': the user just typed it.
  function sendJoin(name, mode) {
    joinPending = name;
    joinMode = mode;
    send('chat-join', { username: name });
    if (protocol === PROTOCOL_V1) {
      // v1 has no welcome: the join is done once sent. The server may hand
      // us a free variant of the name; the echo of our join tells (see
      // HANDLERS_V1). joinPending stays set until that echo.
      joined = true;
      heldName = v1Asked = name;
      saveName(name);
    }
    updateStatusText();
  }

  function onClose(ev) {
    var wasOpen = state === 'open';
    ws = null;
    clearTimeout(stableTimer);
    if (joined) lastHeldName = heldName;
    joined = false;
    joinPending = null;
    renamePending = [];
    if (leaving) {
      setState('closed');
      return;
    }
    if (!everOpened && attempt === 0) {
      appendInfo('Could not reach the chat server; retrying.');
    }
    if (wasOpen) {
      dropNote = closeText(ev || {});
      appendInfo(dropNote + ' Reconnecting…');
      renderUsers();
    }
    scheduleReconnect();
  }

  // Why a connection ended, in plain words (close codes: docs/protocol.md).
  function closeText(ev) {
    var reason = str(ev.reason);
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

  function onMessage(ev) {
    if (typeof ev.data !== 'string') return;       // the chat is text only
    var msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      return;                                      // not JSON: ignore it
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    var payload = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
    var table = protocol === PROTOCOL_V2 ? HANDLERS_V2 : HANDLERS_V1;
    if (Object.prototype.hasOwnProperty.call(table, msg.type)) {
      table[msg.type](payload);
    }
  }

  // --- v2 server messages ------------------------------------------------

  var HANDLERS_V2 = {
    'chat-welcome': function (p) {
      var asked = joinPending;
      var typed = desiredName();
      joined = true;
      joinPending = null;
      rejoinRetries = 0;
      heldName = str(p.username) || asked || heldName;
      if (joinMode !== 'fallback') saveName(heldName);
      el.username.value = heldName;
      clearFlag();

      var lim = p.limits && typeof p.limits === 'object' ? p.limits : {};
      if (lim.maxMessageLength > 0) {
        limits.maxMessageLength = lim.maxMessageLength;
        el.input.maxLength = lim.maxMessageLength;
      }
      if (lim.maxUsernameLength > 0) {
        limits.maxUsernameLength = lim.maxUsernameLength;
        el.username.maxLength = lim.maxUsernameLength;
      }

      users = Array.isArray(p.users) ? p.users.filter(function (u) {
        return typeof u === 'string';
      }) : [];
      if (users.indexOf(heldName) < 0) users.push(heldName);
      renderUsers();

      // The welcome carries the recent history: it replaces what is shown,
      // so a reconnect does not draw the same messages twice.
      clearOutput();
      var history = Array.isArray(p.history) ? p.history : [];
      history.forEach(function (m) {
        if (m && typeof m === 'object') el.output.appendChild(messageLine(m));
      });
      while (el.output.childElementCount > MAX_LINES) {
        el.output.removeChild(el.output.firstElementChild);
      }
      scrollToBottom();
      setState('open');
      if (dropNote) appendInfo(dropNote + ' Reconnected.');
      if (joinNote) appendInfo(joinNote);
      dropNote = joinNote = '';

      // The user changed the name while the join was in flight: ask for it.
      if (typed && typed !== asked && typed !== heldName) {
        el.username.value = typed;
        applyName();
      }
      var queued = outbox;
      outbox = [];
      queued.forEach(function (text) { send('chat-message', { message: text }); });
    },

    'chat-join': function (p) {
      var name = str(p.username);
      if (!name) return;
      addUser(name);
      appendSystem('join', timeOf(p), [{ name: name }, ' joined'], { user: name });
    },

    'chat-message': function (p) {
      appendMessage(p);
    },

    'chat-rename': function (p) {
      var from = str(p.from), to = str(p.to);
      if (!from || !to) return;
      var mine = joined && from === heldName;
      if (mine) {
        heldName = to;
        var i = renamePending.indexOf(to);
        if (i >= 0) renamePending.splice(0, i + 1);
        // Show the confirmed name unless the user is already typing another.
        if (document.activeElement !== el.username || desiredName() === to) {
          el.username.value = to;
        }
        saveName(to);
        clearFlag();
      }
      renameUser(from, to);
      appendSystem('rename', timeOf(p),
        mine ? ['You are now ', { name: to }]
             : [{ name: from }, ' is now ', { name: to }],
        { from: from, to: to });
    },

    'chat-leave': function (p) {
      var name = str(p.username);
      if (!name) return;
      removeUser(name);
      appendSystem('leave', timeOf(p), [{ name: name }, ' left'], { user: name });
      if (reclaim && name === reclaim.name) {
        var r = reclaim;
        reclaim = null;
        if (joined && heldName === r.fallback && desiredName() === r.fallback) {
          el.username.value = r.name;
          applyName();
        }
      }
    },

    'chat-error': function (p) {
      var code = str(p.code);
      var type = str(p.type);
      if (code === 'name-taken' || code === 'name-invalid') {
        nameRefused(code, type, str(p.message));
        return;
      }
      if (code === 'not-joined' && !joinPending) {
        // The server lost track of our join: join again.
        join();
      }
      appendError(errorText(code, str(p.message)), code);
    }
  };

  // A chat-join or chat-rename was refused for its name.
  function nameRefused(code, type, serverText) {
    var asked;
    if (type === 'chat-join' || (!type && joinPending)) {
      asked = joinPending || desiredName();
      joinPending = null;
      if (joinMode === 'auto' && code === 'name-taken' && asked === lastHeldName &&
          rejoinRetries < REJOIN_RETRIES) {
        // Probably our own connection from before the drop: try again soon.
        rejoinRetries++;
        joinPending = asked;
        var sock = ws;
        setTimeout(function () {
          if (ws === sock && state === 'open' && !joined && joinPending === asked) {
            sendJoin(desiredName() || asked, 'auto');
          }
        }, REJOIN_RETRY_MS * rejoinRetries);
        return;
      }
      if (joinMode === 'auto') {
        // A kept name that someone (perhaps this page in another tab) holds,
        // or one this server does not accept: join under a fresh default and
        // say so; the kept name stays kept.
        var fresh = defaultName();
        var ours = code === 'name-taken' && asked === lastHeldName;
        joinNote = (ours
          ? 'The name ' + asked + ' is still held by your old connection'
          : code === 'name-taken'
            ? 'The name ' + asked + ' is taken (perhaps in another tab)'
            : 'The name ' + asked + ' cannot be used here') +
          ', so you joined as ' + fresh + '. ' +
          (ours ? 'You get it back once it is free.' : 'Change your name any time.');
        // Our own old connection lets go of the name sooner or later: then
        // take it back (see chat-leave), unless the user picked another.
        reclaim = ours ? { name: asked, fallback: fresh } : null;
        el.username.value = fresh;
        sendJoin(fresh, 'fallback');
        return;
      }
      // Not joined: keep the refused name in the field, flagged, so the user
      // can fix it; messages typed meanwhile go back into the input box.
      el.username.value = asked;
      flagName();
      if (outbox.length && !el.input.value) el.input.value = outbox[0];
      outbox = [];
      updateStatusText();
    } else {
      asked = renamePending.shift() || desiredName();
      // Still joined under the held name: show that name again.
      el.username.value = heldName;
      flagName();
    }
    appendError(errorText(code, serverText, asked), code);
  }

  function flagName() {
    el.username.classList.add('invalid');
    el.username.setAttribute('aria-invalid', 'true');
  }

  function clearFlag() {
    el.username.classList.remove('invalid');
    el.username.removeAttribute('aria-invalid');
  }

  // Every chat-error code of docs/protocol.md, in plain words.
  function errorText(code, serverText, name) {
    var maxMsg = limits.maxMessageLength;
    var maxName = limits.maxUsernameLength || el.username.maxLength;
    switch (code) {
      case 'bad-json':
        return 'The server could not read a message from this page (it was not valid JSON).';
      case 'bad-envelope':
        return 'The server could not understand a message from this page.';
      case 'unknown-type':
        return 'The server does not know that kind of message.';
      case 'bad-field':
        return 'A message from this page was missing something the server needs.';
      case 'not-joined':
        return 'You had not joined the chat yet; joining now. Please send that again.';
      case 'already-joined':
        return 'You are already in the chat.';
      case 'name-invalid':
        return 'The name ' + (name ? '"' + name + '" ' : '') + 'cannot be used: a name needs ' +
          '1 to ' + maxName + ' characters and no control characters.';
      case 'name-taken':
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

  // --- v1 server messages ------------------------------------------------

  var HANDLERS_V1 = {
    'chat-join': function (p) {
      var name = str(p.username);
      if (!name) return;
      var now = new Date();
      if (joinPending && isVariantOf(name, joinPending)) {
        // Our own join coming back, perhaps under a free variant of the name.
        if (name !== joinPending) {
          appendInfo('The server could not give you the name ' + joinPending +
            ', so it calls you ' + name + '.');
          el.username.value = name;
        }
        heldName = v1Asked = name;
        joinPending = null;
      } else if (v1RenameFrom && name === v1Asked) {
        // The second half of our rename: leave(old) then join(new).
        var from = v1RenameFrom;
        v1RenameFrom = '';
        heldName = name;
        addUser(name);
        appendSystem('rename', now, ['You are now ', { name: name }], { from: from, to: name });
        return;
      }
      addUser(name);
      appendSystem('join', now, [{ name: name }, ' joined'], { user: name });
    },

    'chat-message': function (p) {
      var name = str(p.username), text = str(p.message);
      appendMessage({ username: name, message: text });
      var sent = v1LastSent;
      if (sent && name === heldName && text.trim() === sent.text) {
        v1LastSent = null;
        if (sent.name !== heldName) {
          // Our message came back under the old name: v1's way of saying
          // the new one is taken.
          v1Asked = heldName;
          v1RenameFrom = '';
          if (desiredName() === sent.name) el.username.value = heldName;
          saveName(heldName);
          flagName();
          appendError(errorText('name-taken', '', sent.name), 'name-taken');
        }
      }
    },

    'chat-leave': function (p) {
      var name = str(p.username);
      if (!name) return;
      removeUser(name);
      if (joined && name === heldName && v1Asked && v1Asked !== heldName) {
        // The server never tells us that we left, so this leave is the first
        // half of our own rename; the join of the new name follows.
        v1RenameFrom = name;
        return;
      }
      appendSystem('leave', new Date(), [{ name: name }, ' left'], { user: name });
    }
  };

  // Is `name` what a v1 server makes of a join asking for `asked`? It cuts
  // an over-long name to fit, and gives a taken one its first free variant
  // `Name (2)`, the base cut so the variant fits too (docs/protocol.md).
  function isVariantOf(name, asked) {
    var m = /^(.+) \(\d+\)$/.exec(name);
    var base = m ? m[1] : name;
    return base === asked ||
      (asked.indexOf(base) === 0 && base.length >= Math.min(asked.length, 8));
  }

  // --- what the user does ------------------------------------------------

  // Apply the name in #chat-username: on v2 ask the server for it now; on v1
  // it goes out with the next message. Safe to call repeatedly.
  function applyName() {
    var name = desiredName();
    if (!name) {
      el.username.value = heldName || loadName() || defaultName();
      clearFlag();
      return;
    }
    if (el.username.value !== name) el.username.value = name;
    saveName(name);
    if (!ws || state !== 'open' || protocol !== PROTOCOL_V2) return;
    if (!joined) {
      if (!joinPending) {
        sendJoin(name, 'user');
      }
      return;
    }
    var last = renamePending.length ? renamePending[renamePending.length - 1] : heldName;
    if (name === last) return;
    renamePending.push(name);
    send('chat-rename', { username: name });
  }

  function sendChat() {
    var text = el.input.value;
    if (!text.trim()) {
      el.input.value = '';
      el.input.focus();
      return;
    }
    if (!ws || state !== 'open') {
      appendInfo('Not connected right now; your message is still in the box. ' +
        'Send it again once the chat is back.');
      el.input.focus();
      return;
    }
    if (protocol === PROTOCOL_V2) {
      applyName();                      // may send chat-rename or chat-join
      if (joined) send('chat-message', { message: text });
      else outbox.push(text);           // sent once the welcome arrives
    } else {
      var name = desiredName() || heldName;
      el.username.value = name;
      saveName(name);
      v1Asked = name;
      v1LastSent = { name: name, text: text.trim() };
      send('chat-message', { username: name, message: text });
    }
    el.input.value = '';
    el.input.focus();
  }

  // --- wiring ------------------------------------------------------------

  el.form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    sendChat();
  });

  // Enter also sends from a plain keydown (scripts that fire key events, and
  // browsers that do not submit a form on Enter). An IME composing text
  // keeps its Enter.
  el.input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      sendChat();
    }
  });

  el.nameForm.addEventListener('submit', function (ev) {
    ev.preventDefault();
    applyName();
  });
  el.username.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      applyName();
      el.input.focus();
    }
  });
  el.username.addEventListener('change', applyName);
  el.username.addEventListener('input', clearFlag);

  el.reconnect.addEventListener('click', reconnectNow);

  el.usersToggle.addEventListener('click', function () {
    var open = el.usersToggle.getAttribute('aria-expanded') !== 'true';
    el.usersToggle.setAttribute('aria-expanded', String(open));
    el.usersPanel.classList.toggle('open', open);
  });

  el.jump.addEventListener('click', function () {
    scrollToBottom();
    el.input.focus();
  });
  el.output.addEventListener('scroll', function () {
    if (isAtBottom()) el.jump.hidden = true;
  });

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  // Leave cleanly when the page goes away; come back if it is restored.
  window.addEventListener('pagehide', function () {
    leaving = true;
    clearTimeout(reconnectTimer);
    clearInterval(countdownTimer);
    if (ws) ws.close(1000, 'page closed');
    else setState('closed');
  });
  window.addEventListener('pageshow', function (ev) {
    if (ev.persisted) {
      leaving = false;
      attempt = 0;
      connect();
    }
  });
  window.addEventListener('online', reconnectNow);

  // Read-only hooks for tests and the curious.
  Object.defineProperty(window, 'rawwsChat', {
    value: Object.freeze({
      state: function () { return state; },
      protocol: function () { return protocol; },
      joined: function () { return joined; },
      username: function () { return heldName; },
      users: function () { return users.slice(); }
    })
  });

  // --- start ---------------------------------------------------------------

  el.username.value = loadName() || defaultName();
  renderUsers();
  el.input.focus();
  connect();
}());
