// A widget host for Element Call, as Element Web embeds it: an iframe with
// @element-hq/element-call-embedded, talking over matrix-widget-api's
// ClientWidgetApi to a driver backed by a matrix-js-sdk client logged in
// to the server under test. scenario.mjs bundles this file with esbuild
// (matrix-js-sdk and matrix-widget-api come from clientapi/testdata/jssdk)
// and calls window.startHost with the session. Test code only.

import { createClient, ClientEvent, RoomStateEvent, EventTimeline } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { ClientWidgetApi, Widget, WidgetDriver, OpenIDRequestState } from "matrix-widget-api";

// Driver is the host's side of the widget API, the part of Element Web's
// StopGapWidgetDriver that Element Call uses: room events and state,
// delayed events (MSC4140/MSC4157), to-device messages, OpenID and the
// homeserver's RTC transports (MSC4143 via MSC4515).
class Driver extends WidgetDriver {
  constructor(client, roomId) {
    super();
    this.client = client;
    this.roomId = roomId;
  }

  // Element Web approves Element Call's capabilities without asking: it is
  // the client's own call widget.
  async validateCapabilities(requested) {
    return requested;
  }

  async sendEvent(type, content, stateKey, roomId) {
    roomId ??= this.roomId;
    const r = stateKey !== null && stateKey !== undefined
      ? await this.client.sendStateEvent(roomId, type, content, stateKey)
      : await this.client.sendEvent(roomId, type, content);
    return { roomId, eventId: r.event_id };
  }

  async sendDelayedEvent(delay, type, content, stateKey, roomId) {
    roomId ??= this.roomId;
    const opts = { delay };
    const r = stateKey !== null && stateKey !== undefined
      ? await this.client._unstable_sendDelayedStateEvent(roomId, opts, type, content, stateKey)
      : await this.client._unstable_sendDelayedEvent(roomId, opts, null, type, content);
    return { roomId, delayId: r.delay_id };
  }

  async cancelScheduledDelayedEvent(delayId) {
    await this.client._unstable_cancelScheduledDelayedEvent(delayId);
  }

  async restartScheduledDelayedEvent(delayId) {
    await this.client._unstable_restartScheduledDelayedEvent(delayId);
  }

  async sendScheduledDelayedEvent(delayId) {
    await this.client._unstable_sendScheduledDelayedEvent(delayId);
  }

  async sendToDevice(type, encrypted, contentMap) {
    // The host has no end-to-end encryption; Element Call asks for it only
    // in encrypted rooms, which this test does not use.
    if (encrypted) throw new Error("this widget host cannot encrypt to-device messages");
    const map = new Map();
    for (const [user, devices] of Object.entries(contentMap)) map.set(user, new Map(Object.entries(devices)));
    await this.client.sendToDevice(type, map);
  }

  state(roomId) {
    const room = this.client.getRoom(roomId);
    return room && room.getLiveTimeline().getState(EventTimeline.FORWARDS);
  }

  async readRoomState(roomId, type, stateKey) {
    const st = this.state(roomId);
    if (!st) return [];
    const evs = stateKey === undefined ? st.getStateEvents(type) : [st.getStateEvents(type, stateKey)].filter(Boolean);
    return evs.map((e) => e.getEffectiveEvent());
  }

  async readStateEvents(type, stateKey, limit, roomIds) {
    const out = [];
    for (const id of roomIds ?? [this.roomId]) out.push(...(await this.readRoomState(id, type, stateKey)));
    return out.slice(0, limit);
  }

  async readRoomTimeline(roomId, type, msgtype, stateKey, limit, since) {
    const room = this.client.getRoom(roomId);
    if (!room) return [];
    const out = [];
    const evs = room.getLiveTimeline().getEvents();
    for (let i = evs.length - 1; i >= 0 && out.length < limit; i--) {
      const ev = evs[i];
      if (since !== undefined && ev.getId() === since) break;
      if (ev.getType() !== type) continue;
      if (stateKey !== undefined && ev.getStateKey() !== stateKey) continue;
      if (msgtype !== undefined && ev.getContent().msgtype !== msgtype) continue;
      out.push(ev.getEffectiveEvent());
    }
    return out;
  }

  async readRoomEvents(type, msgtype, limit, roomIds, since) {
    const out = [];
    for (const id of roomIds ?? [this.roomId]) out.push(...(await this.readRoomTimeline(id, type, msgtype, undefined, limit, since)));
    return out.slice(0, limit);
  }

  // No sticky events (MSC4354) on this host's client or our server: the
  // Matrix 2.0 mode that needs them is not used.
  async readStickyEvents() {
    return [];
  }

  askOpenID(observer) {
    this.client.getOpenIdToken().then(
      (token) => observer.update({ state: OpenIDRequestState.Allowed, token }),
      () => observer.update({ state: OpenIDRequestState.Blocked }),
    );
  }

  async getRtcTransports() {
    return { rtc_transports: await this.client._unstable_getRTCTransports() };
  }

  // No TURN here (loopback): the generator ends without a server.
  async *getTurnServers() {}

  getKnownRooms() {
    return this.client.getVisibleRooms().map((r) => r.roomId);
  }
}

// startHost logs in (with the given access token) and joins roomId.
window.startHost = async ({ baseUrl, userId, accessToken, deviceId, roomId }) => {
  logger.setLevel("warn");
  const client = createClient({ baseUrl, accessToken, userId, deviceId });
  const prepared = new Promise((res) => client.on(ClientEvent.Sync, (st) => { if (st === "PREPARED") res(); }));
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  if (!client.getRoom(roomId) || client.getRoom(roomId).getMyMembership() !== "join") await client.joinRoom(roomId);
  window.host = { client, baseUrl, userId, deviceId, roomId };
};

// openCall embeds Element Call for the room with the URL Element Web
// builds (ElementCall.generateWidgetUrl: the widget's parameters in the
// fragment), with intent "start_call" or "join_existing" and the lobby
// skipped, so that Element Call joins at once.
window.openCall = (intent) => {
  const { client, baseUrl, userId, deviceId, roomId } = window.host;
  const widgetId = `ec-${Math.random().toString(36).slice(2)}`;
  const url = new URL("./ec/index.html", location.href);
  const params = new URLSearchParams({
    widgetId,
    parentUrl: location.href,
    confineToRoom: "true",
    skipLobby: "true",
    returnToLobby: "false",
    intent,
    perParticipantE2EE: "false",
    header: "none",
    userId,
    deviceId,
    roomId,
    baseUrl,
    lang: "en",
    fontScale: "1",
    theme: "light",
    preload: "false",
  });
  url.hash = `#?${params}`;
  const widget = new Widget({
    id: widgetId, creatorUserId: userId, name: "Element Call", type: "m.call",
    url: url.toString(), waitForIframeLoad: false, data: {},
  });
  const iframe = document.createElement("iframe");
  iframe.allow = "camera; microphone; display-capture; autoplay; clipboard-write";
  iframe.src = url.toString();
  // ClientWidgetApi talks to the iframe's window: it must be in the page.
  document.body.append(iframe);
  const api = new ClientWidgetApi(widget, iframe, new Driver(client, roomId));
  api.setViewedRoomId(roomId);
  const log = (...a) => console.log("[host]", ...a);
  // Element Web acknowledges the call widget's join and hangup actions
  // (and its layout and device ones); others get the widget API's error.
  const actions = [];
  for (const action of ["io.element.join", "im.vector.hangup", "io.element.close", "io.element.device_mute", "set_always_on_screen"]) {
    api.on(`action:${action}`, (ev) => {
      ev.preventDefault();
      actions.push(action);
      api.transport.reply(ev.detail, action === "io.element.device_mute" ? ev.detail.data : {});
    });
  }
  const onEvent = (ev) => api.feedEvent(ev.getEffectiveEvent()).catch((e) => log("feedEvent", e.message));
  const onState = (ev) => api.feedStateUpdate(ev.getEffectiveEvent()).catch((e) => log("feedStateUpdate", e.message));
  const onToDevice = (ev) => api.feedToDevice(ev.getEffectiveEvent(), false).catch((e) => log("feedToDevice", e.message));
  client.on(ClientEvent.Event, onEvent);
  client.on(RoomStateEvent.Events, onState);
  client.on(ClientEvent.ToDeviceEvent, onToDevice);
  window.call = {
    actions,
    // hangUp is Element Web's disconnection: it asks the widget to hang
    // up, waits for its own hangup action back, and removes the widget.
    hangUp: async () => {
      const back = new Promise((res) => {
        api.once("action:im.vector.hangup", res);
        api.once("action:io.element.close", res);
      });
      const sent = api.transport.send("im.vector.hangup", {}).then(
        () => log("hangup acknowledged"), (e) => log("hangup refused", e.message));
      // A widget whose call broke may never answer: give it 20 s.
      await Promise.race([back, new Promise((res) => setTimeout(res, 20000))]);
      log("widget hung up", actions);
      await Promise.race([sent, new Promise((res) => setTimeout(res, 5000))]);
      client.off(ClientEvent.Event, onEvent);
      client.off(RoomStateEvent.Events, onState);
      client.off(ClientEvent.ToDeviceEvent, onToDevice);
      api.stop();
      iframe.remove();
    },
  };
};
