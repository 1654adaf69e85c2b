// The view: everything drawn on the page, and the page's own small
// behaviours (the people panel on a phone, the "new messages" button, the
// unread count in the title).
//
// Owns the page's elements (looked up once, by the ids index.html keeps),
// the lines in #chat-output, the people list, the status line and the form
// fields. It holds no chat state: what to draw is passed in.
//
// Every string that came from the network or the user goes into the page as
// text (textContent / createTextNode), never as HTML.

const MAX_LINES = 1000;         // oldest lines are dropped past this
const BOTTOM_SLACK_PX = 40;     // "at the bottom" within this many pixels

function pad2(n) { return n < 10 ? '0' + n : String(n); }

// HH:MM in local time.
function clock(d) { return pad2(d.getHours()) + ':' + pad2(d.getMinutes()); }

// A stable colour slot (0-7) for a name, so each person keeps one colour.
function colourSlot(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
  return ((h % 8) + 8) % 8;
}

export class View {
  constructor(doc) {
    this.doc = doc;
    const $ = (id) => doc.getElementById(id);
    this.el = {
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
    // Messages that arrived while the tab was hidden, counted in its title.
    this.unread = { count: 0, baseTitle: doc.title };
    this.wire();
  }

  // The behaviours that concern only the page itself.
  wire() {
    const el = this.el;
    el.username.addEventListener('input', () => this.clearNameFlag());
    el.usersToggle.addEventListener('click', () => {
      const open = el.usersToggle.getAttribute('aria-expanded') !== 'true';
      el.usersToggle.setAttribute('aria-expanded', String(open));
      el.usersPanel.classList.toggle('open', open);
    });
    el.jump.addEventListener('click', () => {
      this.scrollToBottom();
      el.input.focus();
    });
    el.output.addEventListener('scroll', () => {
      if (this.isAtBottom()) el.jump.hidden = true;
    });
    this.doc.addEventListener('visibilitychange', () => {
      if (!this.doc.hidden) {
        this.unread.count = 0;
        this.doc.title = this.unread.baseTitle;
      }
    });
  }

  // --- the form fields ---------------------------------------------------

  // The name in #chat-username, trimmed.
  typedName() {
    return this.el.username.value.trim();
  }

  // What #chat-username shows (not trimmed: what it is set to, it shows).
  nameField() {
    return this.el.username.value;
  }

  showName(name) {
    this.el.username.value = name;
  }

  isEditingName() {
    return this.doc.activeElement === this.el.username;
  }

  // Marks the name field as refused, until the user edits it.
  flagName() {
    this.el.username.classList.add('invalid');
    this.el.username.setAttribute('aria-invalid', 'true');
  }

  clearNameFlag() {
    this.el.username.classList.remove('invalid');
    this.el.username.removeAttribute('aria-invalid');
  }

  nameMaxLength() {
    return this.el.username.maxLength;
  }

  // The text in the message box.
  draft() {
    return this.el.input.value;
  }

  setDraft(text) {
    this.el.input.value = text;
  }

  focusInput() {
    this.el.input.focus();
  }

  // The server's limits (0: not given) become the fields' maxlength.
  setLimits(limits) {
    if (limits.maxMessageLength > 0) this.el.input.maxLength = limits.maxMessageLength;
    if (limits.maxUsernameLength > 0) this.el.username.maxLength = limits.maxUsernameLength;
  }

  // --- drawing into #chat-output -----------------------------------------

  isAtBottom() {
    const o = this.el.output;
    return o.scrollHeight - o.scrollTop - o.clientHeight <= BOTTOM_SLACK_PX;
  }

  scrollToBottom() {
    this.el.output.scrollTop = this.el.output.scrollHeight;
    this.el.jump.hidden = true;
  }

  timeElement(date) {
    const t = this.doc.createElement('time');
    t.className = 'msg-time';
    t.dateTime = date.toISOString();
    t.title = date.toLocaleString();
    t.textContent = clock(date);
    return t;
  }

  span(className, text) {
    const s = this.doc.createElement('span');
    s.className = className;
    s.textContent = text;
    return s;
  }

  trimOutput() {
    const output = this.el.output;
    while (output.childElementCount > MAX_LINES) output.removeChild(output.firstElementChild);
  }

  // Appends one line; keeps the view at the bottom if it was there (or if
  // `follow` says so), else offers the "new messages" button.
  appendLine(line, follow) {
    const stick = follow || this.isAtBottom();
    this.el.output.appendChild(line);
    this.trimOutput();
    if (stick) this.scrollToBottom();
    else this.el.jump.hidden = false;
    return line;
  }

  // A chat message {id, username, message, time} (time null: now); `mine`
  // marks one of ours.
  messageLine(m, mine) {
    const line = this.doc.createElement('div');
    line.className = 'msg';
    line.dataset.kind = 'message';
    line.dataset.user = m.username;
    if (m.id !== null) line.dataset.id = String(m.id);
    if (mine) line.classList.add('mine');
    line.appendChild(this.timeElement(m.time || new Date()));
    line.appendChild(this.span('msg-user c' + colourSlot(m.username), m.username));
    line.appendChild(this.span('msg-text', m.message));
    return line;
  }

  // A message as it arrives; ours always scrolls into view.
  message(m, mine) {
    this.appendLine(this.messageLine(m, mine), mine);
    if (this.doc.hidden) {
      this.unread.count++;
      this.doc.title = '(' + this.unread.count + ') ' + this.unread.baseTitle;
    }
  }

  // Replaces the conversation with `messages` (a v2 welcome's history);
  // `me` is our name (its lines are marked as ours).
  showHistory(messages, me) {
    this.clear();
    for (const m of messages) this.el.output.appendChild(this.messageLine(m, m.username === me));
    this.trimOutput();
    this.scrollToBottom();
  }

  // A system line: parts is a list of plain strings and {name: ...} objects;
  // names are set in bold. extra holds data-* attributes. `date` null: now.
  system(kind, date, parts, extra) {
    const line = this.doc.createElement('div');
    line.className = 'msg system';
    line.dataset.kind = kind;
    for (const k of Object.keys(extra || {})) line.dataset[k] = extra[k];
    line.appendChild(this.timeElement(date || new Date()));
    const text = this.doc.createElement('span');
    text.className = 'msg-text';
    for (const part of parts) {
      if (typeof part === 'string') {
        text.appendChild(this.doc.createTextNode(part));
      } else {
        const b = this.doc.createElement('b');
        b.className = 'msg-name';
        b.textContent = part.name;
        text.appendChild(b);
      }
    }
    line.appendChild(text);
    return this.appendLine(line, false);
  }

  // Something went wrong that the user should see: always scrolled into view.
  error(text, code) {
    const line = this.doc.createElement('div');
    line.className = 'msg error';
    line.dataset.kind = 'error';
    if (code) line.dataset.code = code;
    line.setAttribute('role', 'alert');
    line.appendChild(this.timeElement(new Date()));
    line.appendChild(this.span('msg-text', text));
    return this.appendLine(line, true);
  }

  info(text) {
    const line = this.doc.createElement('div');
    line.className = 'msg info';
    line.dataset.kind = 'info';
    line.appendChild(this.timeElement(new Date()));
    line.appendChild(this.span('msg-text', text));
    return this.appendLine(line, false);
  }

  clear() {
    const output = this.el.output;
    while (output.firstChild) output.removeChild(output.firstChild);
    this.el.jump.hidden = true;
  }

  // --- the people list ---------------------------------------------------

  // `names` in order; `me` (null when not joined) is marked "(you)".
  showUsers(names, me) {
    const list = this.doc.createDocumentFragment();
    for (const name of names) {
      const li = this.doc.createElement('li');
      li.className = 'user';
      li.dataset.user = name;
      li.appendChild(this.span('user-dot c' + colourSlot(name), ''));
      li.appendChild(this.span('user-name', name));
      if (name === me) {
        li.classList.add('me');
        li.appendChild(this.span('user-you', ' (you)'));
      }
      list.appendChild(li);
    }
    const users = this.el.users;
    while (users.firstChild) users.removeChild(users.firstChild);
    users.appendChild(list);
    this.el.usersCount.textContent = String(names.length);
    this.el.usersCountToggle.textContent = String(names.length);
  }

  // v1 lists only the people who joined after us; the note says so.
  showUsersNote(shown) {
    this.el.usersNote.hidden = !shown;
  }

  // --- the connection's state --------------------------------------------

  // `status`: {state, everOpened, joined, v1, reconnectAt} (see chat.js).
  showState(status) {
    const state = status.state;
    this.el.status.dataset.state = state;
    this.el.reconnect.hidden = !(state === 'reconnecting' || state === 'closed');
    this.el.usersPanel.classList.toggle('stale', state !== 'open');
    this.showStatusText(status);
  }

  showStatusText(status) {
    let text;
    if (status.state === 'connecting') {
      text = status.everOpened ? 'Reconnecting…' : 'Connecting…';
    } else if (status.state === 'open') {
      text = status.joined ? 'Connected' : 'Connected, not joined';
      if (status.v1) text += ' (v1)';
    } else if (status.state === 'reconnecting') {
      const s = Math.max(1, Math.ceil((status.reconnectAt - Date.now()) / 1000));
      text = 'Reconnecting in ' + s + ' s';
    } else {
      text = 'Disconnected';
    }
    this.el.statusText.textContent = text;
  }
}
