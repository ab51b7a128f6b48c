// The member list of a room, with invite, kick and ban for those whose
// power level allows them, the room's settings, and leaving the room.

import { html, useState, useEffect } from "../vendor/preact-htm-3.1.1.mjs";
import { errorText } from "./errors.mjs";

export function Members({ client, room }) {
  const [error, setError] = useState("");
  const [invitee, setInvitee] = useState("");
  useEffect(() => {
    client.loadMembers(room.id).catch((e) => setError(errorText(e)));
  }, [room.id]);
  const members = room.stateEvents("m.room.member")
    .filter((m) => ["join", "invite", "ban"].includes(m.content.membership))
    .sort((a, b) => Math.min(client.powerLevel(room, b.state_key), 1e9) - Math.min(client.powerLevel(room, a.state_key), 1e9));
  const act = (action, userId) => async () => {
    setError("");
    if (action !== "invite" && !confirm(`${action} ${userId}?`)) return;
    try {
      await client.membership(room.id, action, userId);
      await client.loadMembers(room.id);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const invite = async (ev) => {
    ev.preventDefault();
    const id = invitee.trim();
    if (!id) return;
    await act("invite", id)();
    setInvitee("");
  };
  const leave = async () => {
    if (!confirm("Leave this room?")) return;
    try {
      await client.leave(room.id);
      location.hash = "#/";
    } catch (e) {
      setError(errorText(e));
    }
  };
  const myLevel = client.powerLevel(room, client.userId);
  return html`
    <aside class="members" aria-label="Members">
      <h2>Members</h2>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <ul>
        ${members.map((m) => {
          const id = m.state_key;
          const level = client.powerLevel(room, id);
          const mine = id === client.userId;
          const outranks = myLevel > level;
          return html`<li key=${id} data-user-id=${id}>
            <span class="name">${m.content.displayname || id}</span>
            <span class="muted">${m.content.membership !== "join" ? ` (${m.content.membership}ed)` : ""}${level >= 100 ? " owner" : level >= 50 ? " moderator" : ""}</span>
            ${!mine && outranks && m.content.membership !== "ban" && html`<span class="actions">
              ${client.canDo(room, "kick") && html`<button onClick=${act("kick", id)} aria-label=${`Remove ${id}`}>Remove</button>`}
              ${client.canDo(room, "ban") && html`<button onClick=${act("ban", id)} aria-label=${`Ban ${id}`}>Ban</button>`}
            </span>`}
            ${!mine && m.content.membership === "ban" && client.canDo(room, "ban") && html`<button onClick=${act("unban", id)}>Unban</button>`}
          </li>`;
        })}
      </ul>
      ${client.canDo(room, "invite") && html`<form onSubmit=${invite} class="inline">
        <label>Invite <input value=${invitee} onInput=${(e) => setInvitee(e.target.value)} placeholder="@name:server" id="invitee" /></label>
        <button type="submit">Invite</button>
      </form>`}
      <${RoomSettings} client=${client} room=${room} />
      <button class="danger" onClick=${leave}>Leave room</button>
    </aside>`;
}

// RoomSettings edits the name and topic, for those allowed to.
function RoomSettings({ client, room }) {
  const [error, setError] = useState("");
  const [saved, setSaved] = useState(false);
  const canName = client.canSendState(room, "m.room.name");
  const canTopic = client.canSendState(room, "m.room.topic");
  if (!canName && !canTopic) return null;
  const name = room.stateEvent("m.room.name");
  const topic = room.stateEvent("m.room.topic");
  const save = async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    setError("");
    setSaved(false);
    try {
      if (canName && f.roomname.value !== ((name && name.content.name) || "")) {
        await client.sendState(room.id, "m.room.name", "", { name: f.roomname.value });
      }
      if (canTopic && f.roomtopic.value !== ((topic && topic.content.topic) || "")) {
        await client.sendState(room.id, "m.room.topic", "", { topic: f.roomtopic.value });
      }
      setSaved(true);
    } catch (e) {
      setError(errorText(e));
    }
  };
  return html`
    <form onSubmit=${save} class="roomsettings" aria-label="Room settings">
      <h2>Settings</h2>
      ${canName && html`<label>Name <input name="roomname" value=${(name && name.content.name) || ""} /></label>`}
      ${canTopic && html`<label>Topic <textarea name="roomtopic" rows="2" value=${(topic && topic.content.topic) || ""}></textarea></label>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${saved && html`<p role="status">Saved.</p>`}
      <button type="submit">Save</button>
    </form>`;
}
