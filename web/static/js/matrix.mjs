// The client's Matrix side: the session, HTTP calls with refresh tokens,
// and sync (Tessera's WebSocket stream, long-poll /sync as the fallback).
// It speaks only the public client-server API.

const SESSION_KEY = "tessera.session";
const API = "/_matrix/client/v3";
const STREAM = "/_matrix/client/unstable/org.tessera.stream";
const TOKEN_PROTOCOL = "org.tessera.token.";

// The filter every sync uses: members lazily (the member list is fetched
// when opened), and a short timeline per room, so that the first sync
// of a user in many rooms stays small.
const FILTER = JSON.stringify({
  room: {
    timeline: { limit: 30 },
    state: { lazy_load_members: true },
  },
});

// The MatrixRTC membership state event types (unstable and stable).
const CALL_MEMBER_TYPES = ["org.matrix.msc3401.call.member", "m.call.member"];

// MatrixError carries the spec's errcode to the UI.
export class MatrixError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.errcode = (body && body.errcode) || "";
    this.body = body || {};
  }
}

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    return s && s.access_token && s.user_id ? s : null;
  } catch {
    return null;
  }
}

// Server answers the unauthenticated questions asked before login.
export async function serverInfo() {
  const [versions, flows] = await Promise.all([
    fetch("/_matrix/client/versions").then((r) => r.json()),
    fetch(`${API}/login`).then((r) => r.json()),
  ]);
  return { versions, loginFlows: flows.flows || [] };
}

async function rawJSON(method, path, body, token) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try {
    data = await r.json();
  } catch {
    // An empty or non-JSON body: the status says it all.
  }
  if (!r.ok) throw new MatrixError(r.status, data);
  return data;
}

// register walks the user-interactive auth of POST /register: it takes
// the flows the server offers and completes the stages it can (dummy,
// registration token, terms) with what the user typed.
export async function register(username, password, registrationToken) {
  const body = {
    username,
    password,
    initial_device_display_name: "Tessera web",
    refresh_token: true,
  };
  let session;
  for (let i = 0; i < 5; i++) {
    try {
      return await rawJSON("POST", `${API}/register`, body);
    } catch (e) {
      if (e.status !== 401 || !e.body.flows) throw e;
      session = e.body.session;
      const done = e.body.completed || [];
      const flow = e.body.flows.find((f) =>
        f.stages.every((s) => ["m.login.dummy", "m.login.registration_token", "m.login.terms"].includes(s)),
      );
      if (!flow) throw new MatrixError(403, { errcode: "M_FORBIDDEN", error: "Registration needs a step this client cannot do." });
      const next = flow.stages.find((s) => !done.includes(s));
      if (next === "m.login.registration_token") {
        if (!registrationToken) {
          throw new MatrixError(401, { errcode: "TESSERA_NEED_TOKEN", error: "This server needs a registration token to sign up." });
        }
        body.auth = { type: next, token: registrationToken, session };
      } else {
        body.auth = { type: next, session };
      }
    }
  }
  throw new MatrixError(500, { error: "Registration did not finish." });
}

export async function login(username, password) {
  return rawJSON("POST", `${API}/login`, {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: username },
    password,
    initial_device_display_name: "Tessera web",
    refresh_token: true,
  });
}

export function savedSession() {
  return loadSession();
}

export function saveSession(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify({
    user_id: s.user_id,
    device_id: s.device_id,
    access_token: s.access_token,
    refresh_token: s.refresh_token || null,
  }));
}

export function clearSession() {
  localStorage.removeItem(SESSION_KEY);
}

let txnCounter = 0;
function txnId() {
  txnCounter++;
  return `web${Date.now()}.${txnCounter}`;
}

function creatorsPrivileged(version) {
  const v = String(version || "1");
  return v === "org.matrix.hydra.11" || (/^\d+$/.test(v) && Number(v) >= 12);
}

function stateKey(type, key) {
  return `${type}\u0000${key}`;
}

// Room is what the client knows of one room.
class Room {
  constructor(id) {
    this.id = id;
    this.membership = "join";
    this.state = new Map();
    this.timeline = [];
    this.byId = new Map();
    this.edits = new Map(); // original event ID -> latest m.replace event
    this.redacted = new Set();
    this.prevBatch = null;
    this.atStart = false;
    this.typing = [];
    this.receipts = new Map(); // user ID -> event ID of their m.read
    this.unread = 0;
    this.highlight = 0;
    this.inviteState = [];
    this.members = null; // from /members, when asked for
    this.lastTs = 0;
  }

  stateEvent(type, key = "") {
    return this.state.get(stateKey(type, key));
  }

  stateEvents(type) {
    const out = [];
    for (const ev of this.state.values()) if (ev.type === type) out.push(ev);
    return out;
  }
}

// Client is a logged-in session. The UI subscribes to changes with
// onChange; everything it shows is read from here.
export class Client {
  constructor(session) {
    this.session = session;
    this.userId = session.user_id;
    this.rooms = new Map();
    this.accountData = new Map();
    this.presence = new Map();
    this.profiles = new Map();
    this.nextBatch = null;
    this.synced = false;
    this.transport = ""; // "websocket" or "long-poll"
    this.connected = false;
    this.listeners = new Set();
    this.stopped = false;
    this.ws = null;
    this.refreshing = null;
    this.changeQueued = false;
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  // changed coalesces notifications into one per animation frame.
  changed() {
    if (this.changeQueued) return;
    this.changeQueued = true;
    requestAnimationFrame(() => {
      this.changeQueued = false;
      for (const fn of this.listeners) fn();
    });
  }

  // request is an authenticated JSON call; an expired token is refreshed
  // once and the call repeated.
  async request(method, path, body, retried = false) {
    try {
      return await rawJSON(method, path, body, this.session.access_token);
    } catch (e) {
      if (!retried && e.errcode === "M_UNKNOWN_TOKEN" && this.session.refresh_token) {
        await this.refresh();
        return this.request(method, path, body, true);
      }
      if (e.errcode === "M_UNKNOWN_TOKEN") this.loggedOut(e);
      throw e;
    }
  }

  refresh() {
    if (!this.refreshing) {
      this.refreshing = rawJSON("POST", `${API}/refresh`, { refresh_token: this.session.refresh_token })
        .then((r) => {
          this.session.access_token = r.access_token;
          if (r.refresh_token) this.session.refresh_token = r.refresh_token;
          saveSession(this.session);
        })
        .catch((e) => {
          this.loggedOut(e);
          throw e;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  loggedOut(err) {
    if (this.stopped) return;
    this.stop();
    clearSession();
    this.onLoggedOut && this.onLoggedOut(err);
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
    if (this.pollAbort) this.pollAbort.abort();
  }

  async logout() {
    try {
      await rawJSON("POST", `${API}/logout`, {}, this.session.access_token);
    } finally {
      this.stop();
      clearSession();
    }
  }

  room(id) {
    let r = this.rooms.get(id);
    if (!r) {
      r = new Room(id);
      this.rooms.set(id, r);
    }
    return r;
  }

  // start syncs over the WebSocket stream; when the stream cannot be
  // opened (a proxy that does not pass WebSockets), it long-polls /sync.
  start() {
    this.connectStream(0);
  }

  connectStream(failures) {
    if (this.stopped) return;
    // Browsers cannot set headers on a WebSocket, and a token in the URL
    // would be logged by proxies: the token goes as a second subprotocol,
    // which the server never echoes (docs/websocket.md). A token that does
    // not work closes the stream with 4401, as below.
    const q = new URLSearchParams({ filter: FILTER });
    if (this.nextBatch) q.set("since", this.nextBatch);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}${STREAM}?${q}`, ["m.json", `${TOKEN_PROTOCOL}${this.session.access_token}`]);
    } catch {
      this.longPoll();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.transport = "websocket";
      this.connected = true;
      this.changed();
    };
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      if (msg.next_batch) {
        this.applySync(msg);
        if (msg.to_device && msg.to_device.events && msg.to_device.events.length) {
          ws.send(JSON.stringify({ id: txnId(), method: "ack", params: { next_batch: msg.next_batch } }));
        }
      }
    };
    ws.onclose = async (ev) => {
      this.ws = null;
      if (this.stopped) return;
      this.connected = false;
      this.changed();
      if (ev.code === 4401) {
        // The token was revoked or expired: refresh, or the session ended.
        if (this.session.refresh_token) {
          try {
            await this.refresh();
          } catch {
            return;
          }
          this.connectStream(0);
        } else {
          this.loggedOut(new MatrixError(401, { errcode: "M_UNKNOWN_TOKEN" }));
        }
        return;
      }
      if (!opened && failures >= 1) {
        // Twice refused before opening: no WebSockets on this path.
        this.longPoll();
        return;
      }
      const delay = Math.min(30000, 500 * 2 ** failures);
      setTimeout(() => this.connectStream(opened ? 0 : failures + 1), delay);
    };
  }

  async longPoll() {
    this.transport = "long-poll";
    let failures = 0;
    while (!this.stopped) {
      const q = new URLSearchParams({ filter: FILTER, timeout: this.nextBatch ? "30000" : "0" });
      if (this.nextBatch) q.set("since", this.nextBatch);
      try {
        const resp = await this.request("GET", `${API}/sync?${q}`);
        failures = 0;
        this.connected = true;
        this.applySync(resp);
      } catch (e) {
        if (this.stopped) return;
        failures++;
        this.connected = false;
        this.changed();
        await new Promise((res) => setTimeout(res, Math.min(30000, 500 * 2 ** failures)));
      }
    }
  }

  applySync(resp) {
    this.nextBatch = resp.next_batch;
    for (const ev of (resp.account_data && resp.account_data.events) || []) {
      this.accountData.set(ev.type, ev.content);
    }
    for (const ev of (resp.presence && resp.presence.events) || []) {
      this.presence.set(ev.sender, ev.content);
    }
    const rooms = resp.rooms || {};
    for (const [id, jr] of Object.entries(rooms.join || {})) {
      const room = this.room(id);
      room.membership = "join";
      room.inviteState = [];
      for (const ev of (jr.state && jr.state.events) || []) room.state.set(stateKey(ev.type, ev.state_key), ev);
      const tl = jr.timeline || {};
      if (tl.limited) {
        // A gap: start over from this batch rather than show a hole.
        room.timeline = [];
        room.byId.clear();
        room.atStart = false;
      }
      if (tl.prev_batch && (room.prevBatch === null || tl.limited)) room.prevBatch = tl.prev_batch;
      this.addEvents(room, tl.events || [], false);
      for (const ev of (jr.ephemeral && jr.ephemeral.events) || []) {
        if (ev.type === "m.typing") room.typing = ev.content.user_ids || [];
        if (ev.type === "m.receipt") {
          for (const [eventId, kinds] of Object.entries(ev.content)) {
            for (const user of Object.keys(kinds["m.read"] || {})) room.receipts.set(user, eventId);
          }
        }
      }
      if (jr.unread_notifications) {
        room.unread = jr.unread_notifications.notification_count || 0;
        room.highlight = jr.unread_notifications.highlight_count || 0;
      }
      for (const ev of (jr.account_data && jr.account_data.events) || []) {
        room.accountData = room.accountData || new Map();
        room.accountData.set(ev.type, ev.content);
      }
    }
    for (const [id, ir] of Object.entries(rooms.invite || {})) {
      const room = this.room(id);
      room.membership = "invite";
      room.inviteState = (ir.invite_state && ir.invite_state.events) || [];
      for (const ev of room.inviteState) room.state.set(stateKey(ev.type, ev.state_key), ev);
      const me = room.stateEvent("m.room.member", this.userId);
      room.lastTs = (me && me.origin_server_ts) || Date.now();
    }
    for (const [id, lr] of Object.entries(rooms.leave || {})) {
      const room = this.room(id);
      room.membership = "leave";
      for (const ev of (lr.state && lr.state.events) || []) room.state.set(stateKey(ev.type, ev.state_key), ev);
      this.addEvents(room, (lr.timeline && lr.timeline.events) || [], false);
    }
    this.synced = true;
    this.changed();
  }

  // addEvents adds timeline events, at the end (sync) or at the start
  // (back-pagination), and applies edits and redactions to their targets.
  addEvents(room, events, older) {
    const fresh = [];
    for (const ev of events) {
      if (room.byId.has(ev.event_id)) continue;
      room.byId.set(ev.event_id, ev);
      if (ev.state_key !== undefined && !older) room.state.set(stateKey(ev.type, ev.state_key), ev);
      if (ev.type === "m.room.redaction") {
        const target = ev.redacts || (ev.content && ev.content.redacts);
        if (target) room.redacted.add(target);
        continue;
      }
      const rel = ev.content && ev.content["m.relates_to"];
      if (rel && rel.rel_type === "m.replace" && rel.event_id) {
        const prev = room.edits.get(rel.event_id);
        if (!prev || prev.origin_server_ts <= ev.origin_server_ts) room.edits.set(rel.event_id, ev);
        continue;
      }
      if (ev.unsigned && ev.unsigned.redacted_because) room.redacted.add(ev.event_id);
      fresh.push(ev);
      if (ev.origin_server_ts > room.lastTs) room.lastTs = ev.origin_server_ts;
    }
    if (older) room.timeline = fresh.reverse().concat(room.timeline);
    else room.timeline = room.timeline.concat(fresh);
  }

  // backfill loads older events with /messages.
  async backfill(roomId, limit = 50) {
    const room = this.room(roomId);
    if (room.atStart || room.backfilling) return;
    room.backfilling = true;
    try {
      const q = new URLSearchParams({ dir: "b", limit: String(limit), filter: JSON.stringify({ lazy_load_members: true }) });
      if (room.prevBatch) q.set("from", room.prevBatch);
      const r = await this.request("GET", `${API}/rooms/${encodeURIComponent(roomId)}/messages?${q}`);
      for (const ev of r.state || []) {
        const key = stateKey(ev.type, ev.state_key);
        if (!room.state.has(key)) room.state.set(key, ev);
      }
      this.addEvents(room, r.chunk || [], true);
      room.prevBatch = r.end || null;
      if (!r.end || !(r.chunk || []).length) room.atStart = true;
    } finally {
      room.backfilling = false;
      this.changed();
    }
  }

  // --- derived views ---

  directRooms() {
    // m.direct maps user IDs to room IDs; invert it.
    const out = new Map();
    const d = this.accountData.get("m.direct") || {};
    for (const [user, ids] of Object.entries(d)) for (const id of ids || []) out.set(id, user);
    return out;
  }

  roomName(room) {
    const name = room.stateEvent("m.room.name");
    if (name && name.content && name.content.name) return name.content.name;
    const alias = room.stateEvent("m.room.canonical_alias");
    if (alias && alias.content && alias.content.alias) return alias.content.alias;
    const dm = this.directRooms().get(room.id);
    if (dm) return this.displayName(room, dm);
    const others = room.stateEvents("m.room.member")
      .filter((m) => m.state_key !== this.userId && m.content && ["join", "invite"].includes(m.content.membership))
      .map((m) => this.displayName(room, m.state_key));
    if (others.length) return others.slice(0, 3).join(", ");
    if (room.membership === "invite") {
      const me = room.stateEvent("m.room.member", this.userId);
      if (me) return this.displayName(room, me.sender);
    }
    return "Empty room";
  }

  displayName(room, userId) {
    const m = room && room.stateEvent("m.room.member", userId);
    if (m && m.content && m.content.displayname) return m.content.displayname;
    const p = this.profiles.get(userId);
    if (p && p.displayname) return p.displayname;
    return userId;
  }

  isEncrypted(room) {
    return !!room.stateEvent("m.room.encryption");
  }

  powerLevel(room, userId) {
    // Room versions 12 and later (MSC4289) give the creators a power
    // above every level, and leave them out of power_levels.users.
    const create = room.stateEvent("m.room.create");
    if (create && creatorsPrivileged(create.content.room_version)) {
      if (create.sender === userId || (create.content.additional_creators || []).includes(userId)) return Infinity;
    }
    const pl = room.stateEvent("m.room.power_levels");
    if (!pl) return 0;
    const users = pl.content.users || {};
    return users[userId] !== undefined ? users[userId] : pl.content.users_default || 0;
  }

  canDo(room, action) {
    const pl = room.stateEvent("m.room.power_levels");
    const needed = pl && pl.content[action] !== undefined ? pl.content[action] : 50;
    return this.powerLevel(room, this.userId) >= needed;
  }

  // stateLevel is the power level sending a state event of type takes
  // (0 in a room without power levels, as the auth rules have it).
  stateLevel(room, type) {
    const pl = room.stateEvent("m.room.power_levels");
    if (!pl) return 0;
    const events = pl.content.events || {};
    return events[type] !== undefined ? events[type] : pl.content.state_default !== undefined ? pl.content.state_default : 50;
  }

  canSendState(room, type) {
    return this.powerLevel(room, this.userId) >= this.stateLevel(room, type);
  }

  // --- actions ---

  sendEvent(roomId, type, content) {
    return this.request("PUT", `${API}/rooms/${encodeURIComponent(roomId)}/send/${encodeURIComponent(type)}/${txnId()}`, content);
  }

  sendState(roomId, type, stateKeyValue, content) {
    return this.request("PUT", `${API}/rooms/${encodeURIComponent(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKeyValue)}`, content);
  }

  redact(roomId, eventId, reason) {
    return this.request("PUT", `${API}/rooms/${encodeURIComponent(roomId)}/redact/${encodeURIComponent(eventId)}/${txnId()}`, reason ? { reason } : {});
  }

  typing(roomId, typing) {
    const body = typing ? { typing: true, timeout: 5000 } : { typing: false };
    return this.request("PUT", `${API}/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(this.userId)}`, body);
  }

  markRead(roomId, eventId) {
    const room = this.room(roomId);
    if (room.lastSentReceipt === eventId) return Promise.resolve();
    room.lastSentReceipt = eventId;
    return this.request("POST", `${API}/rooms/${encodeURIComponent(roomId)}/read_markers`, {
      "m.fully_read": eventId,
      "m.read": eventId,
    });
  }

  async createRoom(opts) {
    const body = {
      name: opts.name || undefined,
      topic: opts.topic || undefined,
      room_alias_name: opts.alias || undefined,
      preset: opts.public ? "public_chat" : "private_chat",
      visibility: opts.public ? "public" : "private",
      invite: opts.invite || [],
      is_direct: !!opts.isDirect,
    };
    if (opts.video) {
      // Element's video rooms: a room whose type says calls live there.
      body.creation_content = { type: "org.matrix.msc3417.call" };
    }
    const r = await this.request("POST", `${API}/createRoom`, body);
    if (!opts.video) await this.letMembersCall(r.room_id);
    if (opts.isDirect && opts.invite && opts.invite.length) await this.addDirect(opts.invite[0], r.room_id);
    return r.room_id;
  }

  // letMembersCall lets every member send their own MatrixRTC membership,
  // which joining a call takes, as Element does in the rooms it creates
  // (the server already does so in video rooms). Done after creation so
  // that the server's other defaults stay as they are.
  async letMembersCall(roomId) {
    const path = `${API}/rooms/${encodeURIComponent(roomId)}/state/m.room.power_levels`;
    const pl = await this.request("GET", path);
    pl.events = pl.events || {};
    if (CALL_MEMBER_TYPES.every((t) => pl.events[t] === 0)) return;
    for (const t of CALL_MEMBER_TYPES) pl.events[t] = 0;
    await this.request("PUT", path, pl);
  }

  async addDirect(userId, roomId) {
    const d = structuredClone(this.accountData.get("m.direct") || {});
    const ids = d[userId] || [];
    if (!ids.includes(roomId)) d[userId] = ids.concat(roomId);
    this.accountData.set("m.direct", d);
    await this.request("PUT", `${API}/user/${encodeURIComponent(this.userId)}/account_data/m.direct`, d);
  }

  async join(idOrAlias) {
    const r = await this.request("POST", `${API}/join/${encodeURIComponent(idOrAlias)}`, {});
    return r.room_id;
  }

  // acceptInvite joins, and remembers a DM invite in m.direct.
  async acceptInvite(roomId) {
    const room = this.room(roomId);
    const me = room.stateEvent("m.room.member", this.userId);
    await this.join(roomId);
    if (me && me.content && me.content.is_direct) await this.addDirect(me.sender, roomId);
  }

  leave(roomId) {
    return this.request("POST", `${API}/rooms/${encodeURIComponent(roomId)}/leave`, {});
  }

  membership(roomId, action, userId, reason) {
    const body = { user_id: userId };
    if (reason) body.reason = reason;
    return this.request("POST", `${API}/rooms/${encodeURIComponent(roomId)}/${action}`, body);
  }

  async loadMembers(roomId) {
    const r = await this.request("GET", `${API}/rooms/${encodeURIComponent(roomId)}/members`);
    const room = this.room(roomId);
    room.members = r.chunk || [];
    for (const ev of room.members) room.state.set(stateKey(ev.type, ev.state_key), ev);
    this.changed();
    return room.members;
  }

  searchUsers(term) {
    return this.request("POST", `${API}/user_directory/search`, { search_term: term, limit: 20 });
  }

  publicRooms(term) {
    return this.request("POST", `${API}/publicRooms`, term ? { limit: 50, filter: { generic_search_term: term } } : { limit: 50 });
  }

  async profile(userId) {
    if (this.profiles.has(userId)) return this.profiles.get(userId);
    const p = await this.request("GET", `${API}/profile/${encodeURIComponent(userId)}`).catch(() => ({}));
    this.profiles.set(userId, p);
    return p;
  }

  // lookupProfile is a user's profile, or null when there is no such user.
  async lookupProfile(userId) {
    try {
      const p = await this.request("GET", `${API}/profile/${encodeURIComponent(userId)}`);
      this.profiles.set(userId, p);
      return p;
    } catch (e) {
      if (e.status === 404) return null;
      throw e;
    }
  }

  setDisplayName(name) {
    this.profiles.delete(this.userId);
    return this.request("PUT", `${API}/profile/${encodeURIComponent(this.userId)}/displayname`, { displayname: name });
  }

  devices() {
    return this.request("GET", `${API}/devices`);
  }

  // withPassword repeats a call that needs m.login.password auth (UIA).
  async withPassword(method, path, body, password) {
    try {
      return await this.request(method, path, body);
    } catch (e) {
      if (e.status !== 401 || !e.body.flows) throw e;
      body.auth = {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: this.userId },
        password,
        session: e.body.session,
      };
      return this.request(method, path, body);
    }
  }

  deleteDevice(deviceId, password) {
    return this.withPassword("DELETE", `${API}/devices/${encodeURIComponent(deviceId)}`, {}, password);
  }

  changePassword(oldPassword, newPassword) {
    return this.withPassword("POST", `${API}/account/password`, { new_password: newPassword, logout_devices: false }, oldPassword);
  }

  async upload(file) {
    const doUpload = () =>
      fetch(`/_matrix/media/v3/upload?filename=${encodeURIComponent(file.name)}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.session.access_token}`, "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
    let r = await doUpload();
    if (r.status === 401 && this.session.refresh_token) {
      await this.refresh();
      r = await doUpload();
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new MatrixError(r.status, data);
    return data.content_uri;
  }

  // mediaBlob fetches authenticated media (v1.11) with the token in the
  // header, never in a URL, and returns an object URL for <img>/<a>.
  async mediaBlob(mxc, thumb) {
    const m = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc || "");
    if (!m) throw new Error("not an mxc:// URI");
    const base = `/_matrix/client/v1/media/${thumb ? "thumbnail" : "download"}/${encodeURIComponent(m[1])}/${encodeURIComponent(m[2])}`;
    const url = thumb ? `${base}?width=${thumb}&height=${thumb}&method=scale` : base;
    const get = () => fetch(url, { headers: { Authorization: `Bearer ${this.session.access_token}` } });
    let r = await get();
    if (r.status === 401 && this.session.refresh_token) {
      await this.refresh();
      r = await get();
    }
    if (!r.ok) throw new MatrixError(r.status, await r.json().catch(() => ({})));
    return URL.createObjectURL(await r.blob());
  }
}
