// Calls through the server's embedded SFU, the way Element Call joins
// them (MatrixRTC): a call membership state event per device, a LiveKit
// token from the token service (found through rtc_transports, with an
// OpenID token), and livekit-client for the media. livekit-client is
// large, so it is loaded only when a call starts.

import { html, useState, useEffect, useRef } from "../vendor/preact-htm-3.1.1.mjs";
import { errorText } from "./errors.mjs";

const MEMBER = "org.matrix.msc3401.call.member";
const LIVEKIT = "../vendor/livekit-client-2.23.0.mjs";
// How long the membership outlives a tab that vanished: a delayed "left"
// event (MSC4140) the page keeps restarting while it is in the call.
const LEAVE_DELAY_MS = 30000;
// Element Call's membership lifetime.
const EXPIRES_MS = 4 * 60 * 60 * 1000;

export function isVideoRoom(room) {
  const c = room.stateEvent("m.room.create");
  return !!(c && c.content && c.content.type === "org.matrix.msc3417.call");
}

// stateKey is the membership's state key as matrix-js-sdk's
// MatrixRTCSession (Element Call, Element Web and X) writes it for the
// room's call: "_" + user + "_" + device + "_" + application and call ID
// ("m.call" and "" for the room call).
export function stateKey(userId, deviceId) {
  return `_${userId}_${deviceId}_m.call`;
}

// createdTs is when a membership began: its created_ts (kept by updates),
// else the event's own timestamp.
function createdTs(ev) {
  const c = ev.content || {};
  return typeof c.created_ts === "number" ? c.created_ts : ev.origin_server_ts;
}

// callMembers are the devices with a live membership of the room's call
// (application "m.call", call ID ""; a "left" membership is empty),
// oldest first, as matrix-js-sdk orders them.
export function callMembers(room) {
  return room.stateEvents(MEMBER).filter((ev) => {
    const c = ev.content || {};
    if (c.application !== "m.call" || (c.call_id !== "" && c.call_id !== "ROOM") || typeof c.device_id !== "string") return false;
    return createdTs(ev) + (c.expires || EXPIRES_MS) > Date.now();
  }).sort((a, b) => createdTs(a) - createdTs(b));
}

// callFocus is the LiveKit service and alias a new participant must use.
// Legacy MatrixRTC ("oldest_membership", what Element Call publishes
// today) puts everyone on the SFU of the oldest membership; a call no one
// is in yet, or one whose oldest member picks per member ("multi_sfu"),
// gets ours.
export function callFocus(members, ownService, roomId) {
  const oldest = members[0];
  const c = (oldest && oldest.content) || {};
  const f = (c.foci_preferred || [])[0];
  if (oldest && (!c.focus_active || c.focus_active.focus_selection === "oldest_membership") &&
      f && f.type === "livekit" && f.livekit_service_url && f.livekit_alias) {
    return { service: f.livekit_service_url.replace(/\/+$/, ""), alias: f.livekit_alias };
  }
  return { service: ownService, alias: roomId };
}

// forbiddenText says why this user cannot join the room's call: joining
// is sending one's own membership state, and the room's power levels ask
// more for it than the user has (a room made before calls, by a client
// that did not lower that level as Element and this client do).
function forbiddenText(client, room) {
  const mine = client.powerLevel(room, client.userId);
  return `Joining a call in this room takes power level ${client.stateLevel(room, MEMBER)}, and yours is ${mine}.`;
}

// Call is one device's presence in a room's call.
class Call {
  constructor(client, room, onUpdate) {
    this.client = client;
    this.room = room;
    this.onUpdate = onUpdate;
    this.stateKey = stateKey(client.userId, client.session.device_id);
    this.lk = null;
    this.LK = null;
    this.delayId = null;
    this.timer = null;
  }

  statePath() {
    return `/_matrix/client/v3/rooms/${encodeURIComponent(this.room.id)}/state/${MEMBER}/${encodeURIComponent(this.stateKey)}`;
  }

  async serviceURL() {
    let r;
    try {
      r = await this.client.request("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports");
    } catch (e) {
      if (e.status === 404) throw new Error("Calls are not turned on on this server.");
      throw e;
    }
    const t = (r.rtc_transports || []).find((f) => f.type === "livekit" && f.livekit_service_url);
    if (!t) throw new Error("Calls are not turned on on this server.");
    return t.livekit_service_url.replace(/\/+$/, "");
  }

  async join() {
    const c = this.client;
    if (!c.canSendState(this.room, MEMBER)) throw new Error(forbiddenText(c, this.room));
    // Element Call encrypts the media of an encrypted room with keys sent
    // over end-to-end encrypted messages, which this client cannot read.
    if (c.isEncrypted(this.room)) {
      throw new Error("This room is end-to-end encrypted, and so are its calls: join from an app with end-to-end encryption, such as Element.");
    }
    const own = await this.serviceURL();
    const others = callMembers(this.room).filter((ev) => ev.state_key !== this.stateKey);
    const focus = callFocus(others, own, this.room.id);
    // The page may only talk to its own origin (its CSP's connect-src).
    if (new URL(focus.service, location.href).origin !== location.origin) {
      throw new Error(`This call runs on another server's media service (${new URL(focus.service).host}), which this web client cannot reach: join from Element.`);
    }
    const openid = await c.request("POST", `/_matrix/client/v3/user/${encodeURIComponent(c.userId)}/openid/request_token`, {});
    const r = await fetch(`${focus.service}/sfu/get`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room: focus.alias, openid_token: openid, device_id: c.session.device_id }),
    });
    const tok = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(tok.error || `The call service answered ${r.status}.`);
    this.LK = await import(LIVEKIT);
    const LK = this.LK;
    const lk = new LK.Room({ adaptiveStream: true, dynacast: true });
    this.lk = lk;
    for (const ev of [
      LK.RoomEvent.ParticipantConnected, LK.RoomEvent.ParticipantDisconnected, LK.RoomEvent.TrackSubscribed,
      LK.RoomEvent.TrackUnsubscribed, LK.RoomEvent.TrackMuted, LK.RoomEvent.TrackUnmuted,
      LK.RoomEvent.LocalTrackPublished, LK.RoomEvent.LocalTrackUnpublished, LK.RoomEvent.ActiveDeviceChanged,
    ]) lk.on(ev, () => this.onUpdate());
    lk.on(LK.RoomEvent.Disconnected, () => {
      this.stopMembership();
      this.onUpdate();
    });
    await lk.connect(tok.url, tok.jwt);
    // The "left" event first, delayed, so that a closed tab leaves.
    try {
      const d = await c.request("PUT", `${this.statePath()}?org.matrix.msc4140.delay=${LEAVE_DELAY_MS}`, {});
      this.delayId = d.delay_id || null;
    } catch {
      this.delayId = null; // no delayed events: the membership expires instead
    }
    if (this.delayId) {
      this.timer = setInterval(() => this.delayed("restart"), LEAVE_DELAY_MS / 3);
    }
    await c.request("PUT", this.statePath(), {
      application: "m.call",
      call_id: "",
      scope: "m.room",
      device_id: c.session.device_id,
      // The LiveKit identity /sfu/get gives this device.
      membershipID: `${c.userId}:${c.session.device_id}`,
      expires: EXPIRES_MS,
      focus_active: { type: "livekit", focus_selection: "oldest_membership" },
      // As Element Call: the focus in use first, then our own.
      foci_preferred: [{ type: "livekit", livekit_service_url: focus.service, livekit_alias: focus.alias },
        ...(focus.service === own ? [] : [{ type: "livekit", livekit_service_url: own, livekit_alias: this.room.id }])],
      "m.call.intent": "video",
    });
    // One track at a time: each publication is negotiated on its own.
    await lk.localParticipant.setCameraEnabled(true);
    await lk.localParticipant.setMicrophoneEnabled(true);
    this.onUpdate();
  }

  delayed(action) {
    if (!this.delayId) return Promise.resolve();
    return this.client.request("POST", `/_matrix/client/unstable/org.matrix.msc4140/delayed_events/${encodeURIComponent(this.delayId)}`, { action })
      .catch(() => {});
  }

  stopMembership() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async leave() {
    this.stopMembership();
    if (this.lk) await this.lk.disconnect();
    // Send the scheduled "left" now; without one, write it.
    if (this.delayId) await this.delayed("send");
    else await this.client.request("PUT", this.statePath(), {}).catch(() => {});
    this.delayId = null;
  }

  async toggle(kind) {
    const p = this.lk.localParticipant;
    if (kind === "camera") await p.setCameraEnabled(!p.isCameraEnabled);
    else await p.setMicrophoneEnabled(!p.isMicrophoneEnabled);
    this.onUpdate();
  }

  async switchCamera() {
    const devices = await this.LK.Room.getLocalDevices("videoinput");
    if (devices.length < 2) return false;
    const current = this.lk.getActiveDevice("videoinput");
    const i = devices.findIndex((d) => d.deviceId === current);
    await this.lk.switchActiveDevice("videoinput", devices[(i + 1) % devices.length].deviceId);
    return true;
  }

  // tiles: one per participant, with their camera track if any.
  tiles() {
    if (!this.lk) return [];
    const LK = this.LK;
    const all = [this.lk.localParticipant, ...this.lk.remoteParticipants.values()];
    return all.map((p) => {
      const cam = p.getTrackPublication(LK.Track.Source.Camera);
      const mic = p.getTrackPublication(LK.Track.Source.Microphone);
      return {
        id: p.identity,
        local: p === this.lk.localParticipant,
        // /sfu/get identities are "@user:server:DEVICE".
        userId: p.identity.replace(/:[^:]*$/, ""),
        video: cam && cam.track && !cam.isMuted ? cam.track : null,
        audio: !p.isLocal && mic && mic.track ? mic.track : null,
        muted: !mic || mic.isMuted,
      };
    });
  }
}

// useTrack attaches a LiveKit track to the element behind the ref.
function useTrack(track) {
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!track || !el) return undefined;
    track.attach(el);
    return () => track.detach(el);
  }, [track]);
  return ref;
}

function Tile({ client, room, tile }) {
  const video = useTrack(tile.video);
  const audio = useTrack(tile.audio);
  const name = tile.local ? "You" : client.displayName(room, tile.userId);
  return html`
    <figure class=${`tile ${tile.local ? "local" : "remote"}`} data-identity=${tile.id}>
      ${tile.video ? html`<video ref=${video} autoplay playsinline muted aria-label=${`Video of ${name}`}></video>` : html`<div class="novideo" aria-hidden="true">${name.slice(0, 1).toUpperCase()}</div>`}
      ${tile.audio && html`<audio ref=${audio} autoplay></audio>`}
      <figcaption>${name}${tile.muted ? " (muted)" : ""}</figcaption>
    </figure>`;
}

export function CallPanel({ client, room }) {
  const [, setVersion] = useState(0);
  const [phase, setPhase] = useState("idle");
  const [error, setError] = useState("");
  const call = useRef(null);
  const update = () => setVersion((v) => v + 1);
  useEffect(() => () => {
    // Leaving the room view leaves the call.
    if (call.current) call.current.leave().catch(() => {});
  }, []);
  const join = async () => {
    setPhase("joining");
    setError("");
    const c = new Call(client, room, update);
    call.current = c;
    try {
      await c.join();
      setPhase("joined");
    } catch (e) {
      call.current = null;
      await c.leave().catch(() => {});
      setError(errorText(e));
      setPhase("idle");
    }
  };
  const leave = async () => {
    const c = call.current;
    call.current = null;
    setPhase("idle");
    if (c) await c.leave().catch((e) => setError(errorText(e)));
  };
  const act = (fn) => async () => {
    try {
      await fn();
    } catch (e) {
      setError(errorText(e));
    }
  };
  // Letting members call is lowering the membership's level in the
  // power levels, which Element offers in a room's "Voice & video"
  // settings to those who may change them.
  const allowCalls = async () => {
    setError("");
    try {
      await client.letMembersCall(room.id);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const allowed = client.canSendState(room, MEMBER);
  // Members at the room's default level who could not join: those who
  // may change the power levels are offered to let them.
  const pl = room.stateEvent("m.room.power_levels");
  const membersLevel = (pl && pl.content.users_default) || 0;
  const canAllow = membersLevel < client.stateLevel(room, MEMBER) && client.canSendState(room, "m.room.power_levels");
  const mine = stateKey(client.userId, client.session.device_id);
  const others = callMembers(room).filter((ev) => ev.state_key !== mine);
  const c = call.current;
  const lp = c && c.lk && c.lk.localParticipant;
  return html`
    <section class="call" aria-label="Call">
      ${phase !== "joined" && html`<div class="callbar">
        <span>${others.length ? `${others.length} in the call` : "No one is in the call."}</span>
        <button class="primary" onClick=${join} disabled=${phase === "joining" || !allowed} id="joincall">${phase === "joining" ? "Joining…" : "Join with camera and microphone"}</button>
      </div>`}
      ${phase !== "joined" && !allowed && html`<div class="callbar" id="callforbidden" role="status">
        <span>${forbiddenText(client, room)} ${canAllow ? "" : "Ask a room admin to let members join calls (in Element: Room settings, Voice & video)."}</span>
      </div>`}
      ${phase !== "joined" && canAllow && html`<div class="callbar" id="callmembers" role="status">
        <span>${allowed ? "Other members" : "Members"} cannot join calls here: it takes power level ${client.stateLevel(room, MEMBER)}, and members have ${membersLevel}.</span>
        <button onClick=${allowCalls} id="allowcalls">Let members join calls</button>
      </div>`}
      ${phase === "joined" && c && html`
        <div class="tiles" id="tiles">${c.tiles().map((t) => html`<${Tile} key=${t.id} client=${client} room=${room} tile=${t} />`)}</div>
        <div class="callbar" role="toolbar" aria-label="Call controls">
          <button onClick=${act(() => c.toggle("microphone"))} aria-pressed=${!!lp && !lp.isMicrophoneEnabled}>${lp && lp.isMicrophoneEnabled ? "Mute" : "Unmute"}</button>
          <button onClick=${act(() => c.toggle("camera"))} aria-pressed=${!!lp && !lp.isCameraEnabled}>${lp && lp.isCameraEnabled ? "Camera off" : "Camera on"}</button>
          <button onClick=${act(async () => { if (!(await c.switchCamera())) setError("There is no other camera."); })}>Switch camera</button>
          <button class="danger" onClick=${leave} id="leavecall">Leave call</button>
        </div>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </section>`;
}
