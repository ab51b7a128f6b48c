// The views other than the chat: new room, add a friend, the public
// directory with join by address, and the user's settings.

import { html, useState, useEffect } from "../vendor/preact-htm-3.1.1.mjs";
import { errorText } from "./errors.mjs";

function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const run = async (fn) => {
    setBusy(true);
    setError("");
    try {
      return await fn();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}

function openRoom(roomId) {
  location.hash = `#/room/${encodeURIComponent(roomId)}`;
}

function serverName(userId) {
  return userId.slice(userId.indexOf(":") + 1);
}

export function CreateRoom({ client }) {
  const { busy, error, run } = useAction();
  const submit = (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    run(async () => {
      const invite = f.invite.value.split(/[\s,]+/).filter(Boolean);
      const id = await client.createRoom({
        name: f.name.value.trim(),
        alias: f.alias.value.trim().replace(/^#/, "").replace(/:.*$/, ""),
        topic: f.topic.value.trim(),
        public: f.visibility.value === "public",
        video: f.video.checked,
        invite,
      });
      openRoom(id);
    });
  };
  return html`
    <section class="page">
      <h1><a href="#/" class="back" aria-label="Back to the list">‹</a>New room</h1>
      <form onSubmit=${submit} id="createroom">
        <label>Name <input name="name" required /></label>
        <label>Address <span class="addr">#<input name="alias" aria-describedby="aliashelp" />:${serverName(client.userId)}</span></label>
        <small id="aliashelp">Optional: lowercase letters, digits and . _ = - / only.</small>
        <label>Topic <textarea name="topic" rows="2"></textarea></label>
        <fieldset>
          <legend>Who can join</legend>
          <label class="radio"><input type="radio" name="visibility" value="private" checked /> Private: only people invited</label>
          <label class="radio"><input type="radio" name="visibility" value="public" /> Public: anyone, listed in the directory</label>
        </fieldset>
        <label class="check"><input type="checkbox" name="video" /> Video room</label>
        <label>Invite <input name="invite" placeholder="@friend:server, @other:server" /></label>
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" class="primary" disabled=${busy}>Create room</button>
      </form>
    </section>`;
}

export function AddFriend({ client }) {
  const { busy, error, run } = useAction();
  const [term, setTerm] = useState("");
  const [results, setResults] = useState(null);
  const search = (ev) => {
    ev.preventDefault();
    run(async () => {
      const t = term.trim();
      const r = await client.searchUsers(t);
      const results = (r.results || []).filter((u) => u.user_id !== client.userId);
      // The directory lists only people one shares a room with (as on
      // Synapse): someone new is found by their user ID or username.
      const guess = t.startsWith("@") ? t : `@${t.toLowerCase()}:${serverName(client.userId)}`;
      if (/^@[^:\s]+:\S+$/.test(guess) && guess !== client.userId && !results.some((u) => u.user_id === guess)) {
        const p = await client.lookupProfile(guess);
        if (p) results.unshift({ user_id: guess, display_name: p.displayname });
      }
      setResults(results);
    });
  };
  // add opens the existing DM with someone, or starts one: a private
  // room, invite flagged is_direct, recorded in m.direct.
  const add = (userId) => run(async () => {
    const dms = client.accountData.get("m.direct") || {};
    const existing = (dms[userId] || []).find((id) => client.rooms.has(id) && client.rooms.get(id).membership === "join");
    openRoom(existing || (await client.createRoom({ isDirect: true, invite: [userId] })));
  });
  return html`
    <section class="page">
      <h1><a href="#/" class="back" aria-label="Back to the list">‹</a>Add friend</h1>
      <form onSubmit=${search} class="inline" role="search">
        <label>Find people <input value=${term} onInput=${(e) => setTerm(e.target.value)} id="usersearch" placeholder="name or @user:server" required /></label>
        <button type="submit" disabled=${busy}>Search</button>
      </form>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${results && html`<ul class="results" id="userresults">
        ${results.length === 0 && html`<li class="muted">Nobody found.</li>`}
        ${results.map((u) => html`<li key=${u.user_id}>
          <span><b>${u.display_name || u.user_id}</b> <span class="muted">${u.user_id}</span></span>
          <button class="primary" onClick=${() => add(u.user_id)} disabled=${busy} aria-label=${`Add ${u.user_id}`}>Add friend</button>
        </li>`)}
      </ul>`}
    </section>`;
}

export function Directory({ client }) {
  const { busy, error, run } = useAction();
  const [rooms, setRooms] = useState(null);
  const [term, setTerm] = useState("");
  const load = () => run(async () => setRooms((await client.publicRooms(term.trim())).chunk || []));
  useEffect(() => {
    load();
  }, []);
  const join = (idOrAlias) => run(async () => openRoom(await client.join(idOrAlias)));
  const joinAddress = (ev) => {
    ev.preventDefault();
    let a = ev.target.elements.address.value.trim();
    if (!a.startsWith("#") && !a.startsWith("!")) a = `#${a}`;
    if (!a.includes(":")) a = `${a}:${serverName(client.userId)}`;
    join(a);
  };
  return html`
    <section class="page">
      <h1><a href="#/" class="back" aria-label="Back to the list">‹</a>Rooms</h1>
      <form onSubmit=${joinAddress} class="inline" id="joinform">
        <label>Join by address <input name="address" placeholder="#room:server" required id="joinaddress" /></label>
        <button type="submit" disabled=${busy}>Join</button>
      </form>
      <form onSubmit=${(e) => { e.preventDefault(); load(); }} class="inline" role="search">
        <label>Search the directory <input value=${term} onInput=${(e) => setTerm(e.target.value)} /></label>
        <button type="submit" disabled=${busy}>Search</button>
      </form>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${rooms && html`<ul class="results">
        ${rooms.length === 0 && html`<li class="muted">No public rooms.</li>`}
        ${rooms.map((r) => html`<li key=${r.room_id}>
          <span><b>${r.name || r.canonical_alias || r.room_id}</b> <span class="muted">${r.canonical_alias || ""} · ${r.num_joined_members} members</span>
          ${r.topic && html`<br /><span>${r.topic}</span>`}</span>
          <button onClick=${() => join(r.canonical_alias || r.room_id)} disabled=${busy}>Join</button>
        </li>`)}
      </ul>`}
    </section>`;
}

export function Settings({ client }) {
  const name = useAction();
  const pw = useAction();
  const dev = useAction();
  const [devices, setDevices] = useState([]);
  const [pwDone, setPwDone] = useState(false);
  const loadDevices = () => dev.run(async () => setDevices((await client.devices()).devices || []));
  useEffect(() => {
    loadDevices();
  }, []);
  const me = client.profiles.get(client.userId) || {};
  const saveName = (ev) => {
    ev.preventDefault();
    const v = ev.target.elements.displayname.value.trim();
    name.run(async () => {
      await client.setDisplayName(v);
      await client.profile(client.userId);
      client.changed();
    });
  };
  const changePassword = (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    setPwDone(false);
    pw.run(async () => {
      if (f.newpw.value !== f.newpw2.value) throw new Error("The two new passwords differ.");
      await client.changePassword(f.oldpw.value, f.newpw.value);
      ev.target.reset();
      setPwDone(true);
    });
  };
  // Logging a device out takes the password again (user-interactive
  // auth): asked in a password field under the device, not a prompt().
  const [removing, setRemoving] = useState(null);
  const removeDevice = (ev) => {
    ev.preventDefault();
    const password = ev.target.elements.devicepw.value;
    dev.run(async () => {
      await client.deleteDevice(removing, password);
      setRemoving(null);
      setDevices((await client.devices()).devices || []);
    });
  };
  const logout = async () => {
    await client.logout().catch(() => {});
    dispatchEvent(new Event("tessera-logout"));
  };
  return html`
    <section class="page">
      <h1><a href="#/" class="back" aria-label="Back to the list">‹</a>Settings</h1>
      <p>Signed in as <b>${client.userId}</b>.</p>
      <form onSubmit=${saveName} class="inline">
        <label>Display name <input name="displayname" value=${me.displayname || ""} /></label>
        <button type="submit" disabled=${name.busy}>Save</button>
      </form>
      ${name.error && html`<p class="error" role="alert">${name.error}</p>`}
      <h2>Password</h2>
      <form onSubmit=${changePassword} id="passwordform">
        <label>Current password <input name="oldpw" type="password" autocomplete="current-password" required /></label>
        <label>New password <input name="newpw" type="password" autocomplete="new-password" required /></label>
        <label>New password again <input name="newpw2" type="password" autocomplete="new-password" required /></label>
        ${pw.error && html`<p class="error" role="alert">${pw.error}</p>`}
        ${pwDone && html`<p role="status">Password changed.</p>`}
        <button type="submit" disabled=${pw.busy}>Change password</button>
      </form>
      <h2>Devices</h2>
      ${dev.error && html`<p class="error" role="alert">${dev.error}</p>`}
      <ul class="results" id="devices" aria-label="Your devices">
        ${devices.map((d) => html`<li key=${d.device_id}>
          <span><b>${d.display_name || d.device_id}</b> <span class="muted">${d.device_id}${d.last_seen_ts ? ` · last seen ${new Date(d.last_seen_ts).toLocaleString()}` : ""}</span></span>
          ${d.device_id === client.session.device_id ? html`<span class="muted">this device</span>` : removing === d.device_id
            ? html`<form onSubmit=${removeDevice} class="inline" data-device-id=${d.device_id}>
                <label>Your password <input name="devicepw" type="password" autocomplete="current-password" required /></label>
                <button type="submit" disabled=${dev.busy}>Log it out</button>
                <button type="button" onClick=${() => setRemoving(null)}>Cancel</button>
              </form>`
            : html`<button onClick=${() => setRemoving(d.device_id)} disabled=${dev.busy} data-device-id=${d.device_id} aria-label=${`Log out ${d.display_name || d.device_id}`}>Log out</button>`}
        </li>`)}
      </ul>
      <button class="danger" onClick=${logout} id="logout">Log out</button>
    </section>`;
}
