// The app shell: sign-in, the room list (friends, invites, rooms) and
// routing between views by the URL's hash (#/room/!id, #/new, ...), so
// that the server only ever serves the one index.html.

import { html, render, useState, useEffect, useRef } from "../vendor/preact-htm-3.1.1.mjs";
import * as matrix from "./matrix.mjs";
import { RoomView } from "./room.mjs";
import { errorText } from "./errors.mjs";
import { CreateRoom, AddFriend, Directory, Settings } from "./pages.mjs";

function useClientVersion(client) {
  const [, setV] = useState(0);
  useEffect(() => client.onChange(() => setV((v) => v + 1)), [client]);
}

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function Auth({ onSession }) {
  const [mode, setMode] = useState("login");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [needToken, setNeedToken] = useState(false);
  const submit = async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    setBusy(true);
    setError("");
    try {
      let s;
      if (mode === "login") {
        s = await matrix.login(f.username.value.trim(), f.password.value);
      } else {
        if (f.password.value !== f.password2.value) throw new Error("The two passwords differ.");
        s = await matrix.register(f.username.value.trim(), f.password.value, f.token ? f.token.value.trim() : "");
      }
      matrix.saveSession(s);
      onSession(s);
    } catch (e) {
      if (e.errcode === "TESSERA_NEED_TOKEN") setNeedToken(true);
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const signup = mode === "register";
  return html`
    <main class="auth">
      <h1>Tessera</h1>
      <div class="tabs" role="tablist">
        <button role="tab" aria-selected=${!signup} onClick=${() => { setMode("login"); setError(""); }}>Log in</button>
        <button role="tab" aria-selected=${signup} onClick=${() => { setMode("register"); setError(""); }}>Sign up</button>
      </div>
      <form onSubmit=${submit} aria-label=${signup ? "Sign up" : "Log in"}>
        <label>Username <input name="username" id="username" autocomplete="username" required autofocus /></label>
        <label>Password <input name="password" id="password" type="password" autocomplete=${signup ? "new-password" : "current-password"} required /></label>
        ${signup && html`
          <label>Password again <input name="password2" id="password2" type="password" autocomplete="new-password" required /></label>
          ${needToken && html`<label>Registration token <input name="token" id="regtoken" required /></label>`}`}
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>${signup ? "Create account" : "Log in"}</button>
      </form>
    </main>`;
}

function presenceDot(client, userId) {
  const p = client.presence.get(userId);
  const state = (p && p.presence) || "offline";
  return html`<span class=${`dot ${state}`} title=${state} aria-label=${state}></span>`;
}

function lastMessage(client, room) {
  for (let i = room.timeline.length - 1; i >= 0; i--) {
    const ev = room.timeline[i];
    if (ev.type === "m.room.message" && !room.redacted.has(ev.event_id)) {
      return `${ev.sender === client.userId ? "You" : client.displayName(room, ev.sender)}: ${ev.content.body || ""}`;
    }
    if (ev.type === "m.room.encrypted") return "Encrypted message";
  }
  return "";
}

function RoomItem({ client, room, current, dmUser }) {
  const name = client.roomName(room);
  const unread = room.unread;
  return html`
    <li>
      <a href=${`#/room/${encodeURIComponent(room.id)}`} class=${`roomitem ${current ? "current" : ""}`}
         aria-current=${current ? "page" : undefined} data-room-id=${room.id}>
        ${dmUser && presenceDot(client, dmUser)}
        <span class="roomname">${name}</span>
        ${unread > 0 && html`<span class=${`badge ${room.highlight ? "highlight" : ""}`} aria-label=${`${unread} unread`}>${unread}</span>`}
        <span class="last">${lastMessage(client, room)}</span>
      </a>
    </li>`;
}

function Invite({ client, room }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const me = room.stateEvent("m.room.member", client.userId);
  const from = me ? me.sender : "";
  const isDM = me && me.content && me.content.is_direct;
  const act = async (accept) => {
    setBusy(true);
    try {
      if (accept) {
        await client.acceptInvite(room.id);
        location.hash = `#/room/${encodeURIComponent(room.id)}`;
      } else {
        await client.leave(room.id);
      }
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return html`
    <li class="invite" data-room-id=${room.id}>
      <span>${isDM ? html`Friend request from <b>${client.displayName(room, from)}</b>` : html`<b>${client.roomName(room)}</b> (invited by ${client.displayName(room, from)})`}</span>
      <span class="actions">
        <button class="primary" disabled=${busy} onClick=${() => act(true)}>Accept</button>
        <button disabled=${busy} onClick=${() => act(false)}>Decline</button>
      </span>
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </li>`;
}

function Sidebar({ client, currentRoom }) {
  const dms = client.directRooms();
  const all = [...client.rooms.values()];
  const invites = all.filter((r) => r.membership === "invite");
  const joined = all.filter((r) => r.membership === "join").sort((a, b) => b.lastTs - a.lastTs);
  const friends = joined.filter((r) => dms.has(r.id));
  const rooms = joined.filter((r) => !dms.has(r.id));
  return html`
    <nav class="sidebar" aria-label="Rooms">
      <header>
        <span class="me" title=${client.userId}>${client.displayName(null, client.userId)}</span>
        <a href="#/settings" class="iconlink" aria-label="Settings">⚙</a>
      </header>
      <div class="quick">
        <a href="#/friends/add" class="button">Add friend</a>
        <a href="#/new" class="button">New room</a>
        <a href="#/directory" class="button">Directory</a>
      </div>
      ${!client.synced && html`<p class="muted" role="status">Loading…</p>`}
      ${client.synced && !client.connected && html`<p class="error" role="status">Reconnecting…</p>`}
      ${invites.length > 0 && html`
        <h2>Invites</h2>
        <ul class="invites">${invites.map((r) => html`<${Invite} key=${r.id} client=${client} room=${r} />`)}</ul>`}
      <h2>Friends</h2>
      <ul class="rooms" id="friends">
        ${friends.map((r) => html`<${RoomItem} key=${r.id} client=${client} room=${r} dmUser=${dms.get(r.id)} current=${r.id === currentRoom} />`)}
        ${client.synced && friends.length === 0 && html`<li class="muted">No friends yet: add one.</li>`}
      </ul>
      <h2>Rooms</h2>
      <ul class="rooms" id="roomlist">
        ${rooms.map((r) => html`<${RoomItem} key=${r.id} client=${client} room=${r} current=${r.id === currentRoom} />`)}
        ${client.synced && rooms.length === 0 && html`<li class="muted">No rooms yet.</li>`}
      </ul>
      <p class="muted transport" id="transport">${client.connected ? `Live (${client.transport === "websocket" ? "WebSocket" : "long-poll"})` : ""}</p>
    </nav>`;
}

function Main({ client }) {
  useClientVersion(client);
  const hash = useHash();
  const m = /^#\/room\/(.+)$/.exec(hash);
  const roomId = m ? decodeURIComponent(m[1]) : null;
  // Unread counts in the tab title, as notifications.
  useEffect(() => {
    let total = 0;
    for (const r of client.rooms.values()) {
      if (r.membership === "join") total += r.unread;
      if (r.membership === "invite") total++;
    }
    document.title = total ? `(${total}) Tessera` : "Tessera";
  });
  useEffect(() => {
    client.profile(client.userId).then(() => client.changed());
  }, [client]);
  let view;
  if (roomId) view = html`<${RoomView} key=${roomId} client=${client} roomId=${roomId} />`;
  else if (hash === "#/new") view = html`<${CreateRoom} client=${client} />`;
  else if (hash === "#/friends/add") view = html`<${AddFriend} client=${client} />`;
  else if (hash === "#/directory") view = html`<${Directory} client=${client} />`;
  else if (hash === "#/settings") view = html`<${Settings} client=${client} />`;
  else view = html`<section class="empty"><p>Pick a friend or a room, or start something new.</p></section>`;
  return html`
    <div class=${`layout ${hash && hash !== "#/" ? "has-view" : ""}`}>
      <${Sidebar} client=${client} currentRoom=${roomId} />
      <main class="view" id="main">${view}</main>
    </div>`;
}

function App() {
  const [client, setClient] = useState(null);
  const [notice, setNotice] = useState("");
  const clientRef = useRef(null);
  const startClient = (session) => {
    const c = new matrix.Client(session);
    c.onLoggedOut = () => {
      setNotice("You were logged out.");
      setClient(null);
    };
    clientRef.current = c;
    c.start();
    setClient(c);
  };
  useEffect(() => {
    const s = matrix.savedSession();
    if (s) startClient(s);
    const onLogout = () => {
      setClient(null);
      location.hash = "";
    };
    addEventListener("tessera-logout", onLogout);
    return () => removeEventListener("tessera-logout", onLogout);
  }, []);
  if (!client) {
    return html`${notice && html`<p class="notice" role="status">${notice}</p>`}<${Auth} onSession=${(s) => { setNotice(""); startClient(s); }} />`;
  }
  return html`<${Main} client=${client} />`;
}

render(html`<${App} />`, document.getElementById("app"));
