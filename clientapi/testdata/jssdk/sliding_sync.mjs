// Runs matrix-js-sdk's simplified sliding sync (MSC4186) as Element Web
// runs it against a Tessera server: SlidingSync with one room list that the
// client scrolls, room subscriptions (lazy members for plain rooms, all
// members for encrypted ones), the to_device, e2ee, account_data, typing
// and receipts extensions, and Rust crypto (matrix-sdk-crypto-wasm).
// Driven by clientapi's TestJSSDKSlidingSync, which registers alice and bob,
// makes 50 rooms of alice's with bob in each and passes the server, the two
// sessions and the room IDs (oldest first) in TESSERA_JSSDK (JSON). The
// result is the line of stdout that starts with TESSERA_RESULT:
// {"ok":true,"checks":[...]} or {"ok":false,"error":...,"step":...}.
//
// Environment:
//   TESSERA_JSSDK_DEBUG=1   the SDK logs at debug level (to stderr).
//   TESSERA_JSSDK_SSLOG=1   every sliding sync request and response is
//                           summarised on stderr as it happens (pos, lists,
//                           ranges, subscriptions, rooms with their fields,
//                           extensions). The last ones are in a failed
//                           result anyway.

// matrix-js-sdk 43 wants Node 22; Node 20 lacks Promise.withResolvers.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const { SlidingSync, SlidingSyncEvent, SlidingSyncState, MSC3575_WILDCARD, MSC3575_STATE_KEY_ME, MSC3575_STATE_KEY_LAZY } =
  await import("matrix-js-sdk/lib/sliding-sync.js");

const cfg = JSON.parse(process.env.TESSERA_JSSDK);
const ssLog = !!process.env.TESSERA_JSSDK_SSLOG;
logger.setLevel(process.env.TESSERA_JSSDK_DEBUG ? "debug" : "info");
// The SDK logs to the console: all of it to stderr, which the test shows
// when it fails; stdout carries only the result line.
const stderrWrite = console.error.bind(console);
for (const m of ["log", "info", "debug", "trace", "warn"]) console[m] = stderrWrite;

const SS_PREFIX = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const LIST = "room_list";
const steps = []; // what passed, in order
// What went wrong without stopping the run (the rest still says something):
// each is reported, and any makes the run fail at the end.
const problems = [];
let step = "start"; // what is running, for the failure report
const failures = []; // requests that failed, with what was sent and answered
const trace = { alice: [], bob: [], "alice again": [] }; // the last sliding sync exchanges of each client

function finish(result) {
  process.stdout.write("TESSERA_RESULT " + JSON.stringify(result) + "\n");
  process.exit(result.ok ? 0 : 1);
}

function fail(error) {
  finish({ ok: false, step, error: String(error?.stack ?? error), checks: steps, problems, failures, trace });
}

const deadline = setTimeout(() => fail(new Error(`timed out after ${cfg.timeoutMs ?? 180000} ms`)), cfg.timeoutMs ?? 180000);

function short(s, n = 600) {
  s = typeof s === "string" ? s : JSON.stringify(s);
  return s && s.length > n ? s.slice(0, n) + "..." : s;
}

// summariseRequest and summariseResponse keep what matters of a sliding
// sync exchange: enough to see what the SDK asked and what came back.
function summariseRequest(url, body) {
  const u = new URL(url);
  const out = { pos: u.searchParams.get("pos") ?? undefined, timeout: u.searchParams.get("timeout") ?? undefined };
  if (body?.lists) {
    out.lists = Object.fromEntries(Object.entries(body.lists).map(([k, l]) => [k, l.ranges]));
  }
  if (body?.room_subscriptions) out.subscribe = Object.keys(body.room_subscriptions);
  if (body?.unsubscribe_rooms) out.unsubscribe = body.unsubscribe_rooms;
  if (body?.extensions) {
    out.extensions = Object.entries(body.extensions)
      .filter(([, e]) => e?.enabled)
      .map(([k, e]) => (e.since !== undefined ? `${k}(since=${e.since})` : k));
  }
  return out;
}

function summariseResponse(r) {
  const out = { pos: r.pos, lists: r.lists };
  out.rooms = Object.fromEntries(
    Object.entries(r.rooms ?? {}).map(([id, room]) => {
      const s = {};
      for (const k of ["initial", "expanded_timeline", "membership", "name", "is_dm", "limited", "num_live", "bump_stamp", "joined_count", "invited_count", "notification_count", "highlight_count"]) {
        if (room[k] !== undefined) s[k] = room[k];
      }
      if (room.lists) s.lists = room.lists;
      if (room.timeline) s.timeline = room.timeline.map((e) => e.type + (e.content?.body ? `:${short(e.content.body, 40)}` : ""));
      if (room.required_state) s.required_state = room.required_state.map((e) => `${e.type}|${e.state_key}`);
      if (room.invite_state) s.invite_state = room.invite_state.length;
      if (room.heroes) s.heroes = room.heroes.map((h) => h.user_id);
      if (room.prev_batch) s.prev_batch = true;
      return [id, s];
    }),
  );
  const ext = r.extensions ?? {};
  out.extensions = {};
  if (ext.to_device) out.extensions.to_device = { next_batch: ext.to_device.next_batch, events: (ext.to_device.events ?? []).map((e) => e.type) };
  if (ext.e2ee) out.extensions.e2ee = ext.e2ee;
  if (ext.account_data) {
    out.extensions.account_data = {
      global: (ext.account_data.global ?? []).map((e) => e.type),
      rooms: Object.fromEntries(Object.entries(ext.account_data.rooms ?? {}).map(([id, evs]) => [id, evs.map((e) => e.type)])),
    };
  }
  if (ext.typing) out.extensions.typing = Object.fromEntries(Object.entries(ext.typing.rooms ?? {}).map(([id, e]) => [id, e.content?.user_ids]));
  if (ext.receipts) out.extensions.receipts = Object.fromEntries(Object.entries(ext.receipts.rooms ?? {}).map(([id, e]) => [id, short(e.content, 300)]));
  for (const k of Object.keys(ext)) {
    if (!(k in out.extensions)) out.extensions[k] = short(ext[k], 200);
  }
  return out;
}

// fetchFor wraps fetch for one client: failed requests are kept with the
// request and response bodies; sliding sync exchanges are summarised.
function fetchFor(who) {
  return async (url, init) => {
    const path = new URL(url).pathname;
    const isSS = path === SS_PREFIX;
    let reqBody;
    if (typeof init?.body === "string") {
      try {
        reqBody = JSON.parse(init.body);
      } catch {
        reqBody = init.body;
      }
    }
    const res = await fetch(url, init);
    if (!res.ok) {
      let text = "";
      try {
        text = await res.clone().text();
      } catch {}
      const request = `${init?.method ?? "GET"} ${path}${new URL(url).search}`;
      // No key backup is an ordinary answer; repeats (the SDK retries) are counted.
      const expected = res.status === 404 && path.endsWith("/room_keys/version");
      const same = failures.find((f) => f.who === who && f.request === request && f.status === res.status && f.answered === short(text, 1500));
      if (same) same.times = (same.times ?? 1) + 1;
      else if (!expected) failures.push({ who, step, request, sent: short(reqBody, 1500), status: res.status, answered: short(text, 1500) });
    }
    if (isSS) {
      const entry = { at: new Date().toISOString(), step, request: summariseRequest(url, reqBody), status: res.status };
      try {
        const body = await res.clone().json();
        entry.response = res.ok ? summariseResponse(body) : body;
      } catch (e) {
        entry.response = `unreadable: ${e}`;
      }
      trace[who].push(entry);
      if (trace[who].length > 30) trace[who].shift();
      if (ssLog) process.stderr.write(`SSLOG ${who} ${JSON.stringify(entry)}\n`);
    }
    return res;
  };
}

// Element Web's configuration (SlidingSyncManager): a list of rooms with
// the state the room list needs and the latest event, rooms the user opens
// subscribed with lazy members, encrypted rooms with all members (to know
// whom to encrypt for).
const REQUIRED_STATE_LIST = [
  ["m.room.join_rules", ""],
  ["m.room.avatar", ""],
  ["m.room.canonical_alias", ""],
  ["m.room.tombstone", ""],
  ["m.room.encryption", ""],
  ["m.room.create", ""],
  ["m.space.child", MSC3575_WILDCARD],
  ["m.space.parent", MSC3575_WILDCARD],
  ["m.room.member", MSC3575_STATE_KEY_ME],
];
const INCLUDE_OLD_ROOMS = {
  timeline_limit: 0,
  required_state: [
    ["m.room.create", ""],
    ["m.room.tombstone", ""],
    ["m.space.child", MSC3575_WILDCARD],
    ["m.space.parent", MSC3575_WILDCARD],
    ["m.room.member", MSC3575_STATE_KEY_ME],
  ],
};
const DEFAULT_ROOM_SUBSCRIPTION_INFO = { timeline_limit: 50, include_old_rooms: INCLUDE_OLD_ROOMS };
const UNENCRYPTED_SUBSCRIPTION = {
  required_state: [
    [MSC3575_WILDCARD, MSC3575_WILDCARD],
    ["m.room.member", MSC3575_STATE_KEY_ME],
    ["m.room.member", MSC3575_STATE_KEY_LAZY],
  ],
  ...DEFAULT_ROOM_SUBSCRIPTION_INFO,
};
const ENCRYPTED_SUBSCRIPTION_NAME = "encrypted";
const ENCRYPTED_SUBSCRIPTION = { required_state: [[MSC3575_WILDCARD, MSC3575_WILDCARD]], ...DEFAULT_ROOM_SUBSCRIPTION_INFO };

async function start(who, user, ranges, { crypto = true } = {}) {
  const client = sdk.createClient({
    baseUrl: cfg.baseUrl,
    accessToken: user.accessToken,
    userId: user.userId,
    deviceId: user.deviceId,
    fetchFn: fetchFor(who),
  });
  if (crypto) await client.initRustCrypto({ useIndexedDB: false });
  const lists = new Map([
    [LIST, { ranges, timeline_limit: 1, required_state: REQUIRED_STATE_LIST, include_old_rooms: INCLUDE_OLD_ROOMS, filters: {} }],
  ]);
  const ss = new SlidingSync(cfg.baseUrl, lists, UNENCRYPTED_SUBSCRIPTION, client, cfg.pollTimeoutMs ?? 10000);
  ss.addCustomSubscription(ENCRYPTED_SUBSCRIPTION_NAME, ENCRYPTED_SUBSCRIPTION);
  const c = { who, user, client, ss, subs: new Set(), errors: [] };
  ss.on(SlidingSyncEvent.Lifecycle, (state, _resp, err) => {
    if (state === SlidingSyncState.RequestFinished && err) c.errors.push(`${err.httpStatus ?? ""} ${err.errcode ?? ""} ${err.message ?? err}`);
  });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`${who}: sync error: ${data?.error}`));
    });
  });
  prepared.catch(() => {}); // awaited below; an early error must not end the process unreported
  // Element Web's options: members loaded lazily.
  await client.startClient({ slidingSync: ss, lazyLoadMembers: true });
  await withTimeout(`${who}'s first sliding sync response`, prepared, 30000, () => c.errors);
  return c;
}

function withTimeout(what, promise, ms, extra) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => {
        const more = extra?.();
        reject(new Error(`timed out after ${ms} ms waiting for ${what}${more?.length ? `; sync errors: ${more.slice(-5).join("; ")}` : ""}`));
      }, ms);
    }),
  ]);
}

// waitFor polls pred (which may be async) until it returns a truthy
// value; on timeout the error says what was awaited and, through describe,
// what there was instead.
async function waitFor(what, pred, describe, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > until) {
      let have = "";
      try {
        have = describe ? `; have: ${short(describe(), 2000)}` : "";
      } catch (e) {
        have = `; describe failed: ${e}`;
      }
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${have}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function check(what, cond, detail) {
  if (!cond) throw new Error(`${what}: ${typeof detail === "function" ? detail() : detail ?? "failed"}`);
}

// soft is check that records a problem and goes on.
function soft(what, cond, detail) {
  if (cond) return true;
  const p = `${what}: ${typeof detail === "function" ? detail() : detail ?? "failed"}`;
  problems.push({ step, problem: p });
  process.stderr.write(`PROBLEM ${p}\n`);
  return false;
}

// timelineOrder checks that a room's live timeline is in the server's
// order: by origin_server_ts, and each event once.
function timelineOrder(c, roomId, what) {
  const evs = c.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  const ids = evs.map((e) => e.getId());
  const desc = () => JSON.stringify(evs.map((e) => e.getType() + (e.getContent()?.body ? `:${e.getContent().body}` : "")));
  soft(`${c.who}: ${what}: each event once in the live timeline`, new Set(ids).size === ids.length, desc);
  soft(
    `${c.who}: ${what}: the live timeline in order (m.room.create first, then by origin_server_ts)`,
    evs[0]?.getType() === "m.room.create" && evs.every((e, i) => i === 0 || evs[i - 1].getTs() <= e.getTs()),
    desc,
  );
}

function pass(what) {
  steps.push(what);
  process.stderr.write(`PASS ${what}\n`);
}

function subscribe(c, roomId, custom) {
  if (custom) c.ss.useCustomSubscription(roomId, custom);
  c.subs.add(roomId);
  c.ss.modifyRoomSubscriptions(new Set(c.subs));
}

const bodies = (room) => room?.getLiveTimeline().getEvents().map((e) => e.getContent()?.body).filter(Boolean) ?? [];
const roomIds = (c) => c.client.getRooms().map((r) => r.roomId);
const nameOf = (id) => cfg.roomNames?.[cfg.rooms.indexOf(id)] ?? id;
const listCount = (c) => c.ss.getListData(LIST)?.joinedCount;

// newest[i] is the room at position i of the list: the rooms ordered by
// bump_stamp, newest first. The Go side made them oldest first, each
// with its messages before the next one.
const newest = [...cfg.rooms].reverse();
const N = newest.length;

try {
  step = "start alice";
  const alice = await start("alice", cfg.alice, [[0, 9]]);

  // --- The list: 50 rooms, a window of 10, scrolled. ---
  step = "list [0,9]";
  check("alice's list count after the first response", listCount(alice) === N, () => `count ${listCount(alice)}, want ${N}`);
  await waitFor(
    "alice's 10 newest rooms (list range [0,9])",
    () => newest.slice(0, 10).every((id) => alice.client.getRoom(id)),
    () => ({ missing: newest.slice(0, 10).filter((id) => !alice.client.getRoom(id)).map(nameOf), have: roomIds(alice).map(nameOf) }),
    15000,
  );
  {
    const extra = roomIds(alice).filter((id) => !newest.slice(0, 10).includes(id));
    check("rooms outside range [0,9]", extra.length === 0, () => `alice got rooms outside the range: ${extra.map(nameOf)}`);
    const r = alice.client.getRoom(newest[0]);
    check("the newest room's name", r.name === cfg.roomNames[N - 1], () => `name ${JSON.stringify(r.name)}, want ${cfg.roomNames[N - 1]}`);
    check("the newest room's membership", r.getMyMembership() === "join", () => `membership ${r.getMyMembership()}`);
    const last = r.getLiveTimeline().getEvents().at(-1);
    check("the newest room's latest event (timeline_limit 1)", last?.getContent()?.body === cfg.lastBodies[N - 1], () => `timeline ${JSON.stringify(bodies(r))}, want it to end with ${cfg.lastBodies[N - 1]}`);
  }
  pass(`list ${LIST} ranges [[0,9]]: count ${N}, exactly the 10 newest rooms, names and latest events`);

  // --- A subscription to a room outside the range: the oldest one. ---
  step = "subscription outside the range";
  const oldest = newest[N - 1];
  subscribe(alice, oldest);
  const oldRoom = await waitFor(
    `the timeline of the subscribed room ${nameOf(oldest)} (position ${N - 1}, outside [0,9])`,
    () => {
      const r = alice.client.getRoom(oldest);
      return r && cfg.bodies[0].every((b) => bodies(r).includes(b)) && r;
    },
    () => ({ room: !!alice.client.getRoom(oldest), timeline: bodies(alice.client.getRoom(oldest)) }),
    15000,
  );
  check("the subscribed room's membership", oldRoom.getMyMembership() === "join", () => oldRoom.getMyMembership());
  check(
    "the subscribed room's members (required_state * and lazy members)",
    oldRoom.getMember(cfg.alice.userId)?.membership === "join",
    () => `alice's member: ${oldRoom.getMember(cfg.alice.userId)?.membership}`,
  );
  check("the list count with a subscription", listCount(alice) === N, () => `count ${listCount(alice)}`);
  pass(`room subscription to ${nameOf(oldest)} outside the range: timeline ${JSON.stringify(bodies(oldRoom))}`);

  // --- Scrolling: [10,29], then the whole list [0,49]. ---
  for (const [from, to] of [
    [10, 29],
    [0, N - 1],
  ]) {
    step = `list [${from},${to}]`;
    alice.ss.setListRanges(LIST, [[from, to]]);
    const want = newest.slice(from, to + 1);
    await waitFor(
      `alice's rooms at positions ${from}-${to} after setListRanges`,
      () => want.every((id) => alice.client.getRoom(id)),
      () => ({ missing: want.filter((id) => !alice.client.getRoom(id)).map(nameOf), count: listCount(alice) }),
      20000,
    );
    check(`the list count in range [${from},${to}]`, listCount(alice) === N, () => `count ${listCount(alice)}, want ${N}`);
    for (const id of want) {
      const r = alice.client.getRoom(id);
      const i = cfg.rooms.indexOf(id);
      check(`${nameOf(id)}'s name`, r.name === cfg.roomNames[i], () => `name ${JSON.stringify(r.name)}`);
      check(`${nameOf(id)}'s latest event`, bodies(r).includes(cfg.lastBodies[i]), () => `timeline ${JSON.stringify(bodies(r))}, want ${cfg.lastBodies[i]}`);
    }
    pass(`setListRanges [[${from},${to}]]: count ${N}, rooms ${from}-${to} arrived with names and latest events (alice has ${roomIds(alice).length} rooms)`);
  }
  check("alice's rooms after scrolling", roomIds(alice).length === N, () => `${roomIds(alice).length} rooms`);

  // --- Back-pagination from a list room: the list sent one event
  // (limited, with a prev_batch), /messages brings the rest. ---
  step = "scrollback";
  {
    const r = alice.client.getRoom(newest[1]);
    const token = r.getLiveTimeline().getPaginationToken(sdk.EventTimeline.BACKWARDS);
    soft(`${nameOf(newest[1])}: a prev_batch for the limited timeline`, !!token, () => `pagination token ${token}`);
    if (token) {
      await withTimeout("scrollback", alice.client.scrollback(r, 30), 15000);
      const got = bodies(r);
      const want = cfg.bodies[N - 2];
      if (soft(`${nameOf(newest[1])}: scrollback from prev_batch brings the older messages`, JSON.stringify(got) === JSON.stringify(want), () => `timeline ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)) {
        timelineOrder(alice, newest[1], "a list room after scrollback");
        pass(`scrollback in ${nameOf(newest[1])} from the list's prev_batch: ${JSON.stringify(got)}`);
      }
    }
  }

  // --- bob, and messages both ways in the newest room. ---
  step = "start bob";
  const bob = await start("bob", cfg.bob, [[0, 9]]);
  check("bob's list count", listCount(bob) === N, () => `count ${listCount(bob)}, want ${N}`);
  pass(`bob started: list count ${N}`);

  step = "messages: alice → bob";
  const chat = newest[0];
  // As Element does for the room on screen: both subscribe to it.
  subscribe(alice, chat);
  subscribe(bob, chat);
  await waitFor(
    "bob's subscribed chat room with alice as a member (lazy members of the timeline's senders)",
    () => bob.client.getRoom(chat)?.getMember(cfg.alice.userId),
    () => ({ timeline: bodies(bob.client.getRoom(chat)), members: bob.client.getRoom(chat)?.getMembers().map((m) => m.userId) }),
    15000,
  );
  await waitFor(
    "both chat room subscriptions to be answered (the room's m.room.create in the timeline)",
    () => [alice, bob].every((c) => c.client.getRoom(chat)?.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create")),
    () => Object.fromEntries([alice, bob].map((c) => [c.who, c.client.getRoom(chat)?.getLiveTimeline().getEvents().map((e) => e.getType())])),
    15000,
  );
  // The subscription asks for 50 events where the list asked for 1: the
  // server sends the room's history again (expanded_timeline), older
  // than the event the client has. The SDK must put it before that event.
  timelineOrder(bob, chat, "the chat room after its subscription widened the timeline");
  timelineOrder(alice, chat, "the chat room after its subscription widened the timeline");
  const toBob = `hello bob ${Date.now()}`;
  const { event_id: toBobId } = await alice.client.sendTextMessage(chat, toBob);
  const bobSees = await waitFor(
    "bob to see alice's message through sliding sync",
    () => bob.client.getRoom(chat)?.findEventById(toBobId),
    () => bodies(bob.client.getRoom(chat)),
  );
  check("alice's message at bob", bobSees.getContent().body === toBob && bobSees.getSender() === cfg.alice.userId, () => short(bobSees.event));
  // Bob reads alice's message before he sends anything: a receipt older
  // than the sender's own latest message would be shadowed by it.
  step = "receipts";
  const receiptEvents = [];
  alice.client.on(sdk.ClientEvent.Event, (e) => {
    if (e.getType() === "m.receipt" && e.getRoomId() === chat) receiptEvents.push(e.getContent());
  });
  await bob.client.sendReadReceipt(bobSees);
  await waitFor(
    "alice to see bob's read receipt on her message (receipts extension)",
    () => {
      const r = alice.client.getRoom(chat);
      const ev = r?.findEventById(toBobId);
      return ev && r.getUsersReadUpTo(ev).includes(cfg.bob.userId);
    },
    () => {
      const r = alice.client.getRoom(chat);
      return { bobReadUpTo: r?.getEventReadUpTo(cfg.bob.userId), wanted: toBobId, receiptEvents };
    },
  );
  await waitFor(
    "bob's unread count in the chat room to drop to 0 after his receipt",
    () => bob.client.getRoom(chat)?.getUnreadNotificationCount("total") === 0,
    () => ({ total: bob.client.getRoom(chat)?.getUnreadNotificationCount("total") }),
    15000,
  ).catch((e) => soft("notification_count", false, e.message));
  pass("receipts: alice saw bob's read receipt on her message through the receipts extension");

  step = "messages: bob → alice";
  const toAlice = `hello alice ${Date.now()}`;
  const { event_id: toAliceId } = await bob.client.sendTextMessage(chat, toAlice);
  const aliceSees = await waitFor(
    "alice to see bob's message through sliding sync",
    () => alice.client.getRoom(chat)?.findEventById(toAliceId),
    () => bodies(alice.client.getRoom(chat)),
  );
  check("bob's message at alice", aliceSees.getContent().body === toAlice && aliceSees.getSender() === cfg.bob.userId, () => short(aliceSees.event));
  pass("messages both ways: alice→bob and bob→alice, each seen by the other through sliding sync");

  // --- Typing through its extension. ---
  step = "typing";
  const typingSeen = [];
  bob.client.on(sdk.ClientEvent.Event, (e) => {
    if (e.getType() === "m.typing" && e.getRoomId() === chat) typingSeen.push(e.getContent()?.user_ids);
  });
  await alice.client.sendTyping(chat, true, 30000);
  await waitFor(
    "bob to see alice typing (typing extension → RoomMember.typing)",
    () => bob.client.getRoom(chat)?.getMember(cfg.alice.userId)?.typing,
    () => ({ typingEvents: typingSeen, aliceMember: !!bob.client.getRoom(chat)?.getMember(cfg.alice.userId) }),
  );
  await alice.client.sendTyping(chat, false);
  await waitFor(
    "bob to see alice stop typing",
    () => bob.client.getRoom(chat)?.getMember(cfg.alice.userId)?.typing === false,
    () => ({ typingEvents: typingSeen }),
  );
  pass("typing: bob saw alice start and stop typing through the typing extension");

  // --- An encrypted DM: keys through the e2ee and to_device extensions. ---
  step = "encrypted DM";
  const { room_id: dm } = await alice.client.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    invite: [cfg.bob.userId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  // The new room leads both lists (bump_stamp, newest first): it is in
  // alice's range [0,49] and bob's [0,9]; the counts grow.
  await waitFor(
    "alice's list to count the DM",
    () => listCount(alice) === N + 1 && alice.client.getRoom(dm),
    () => ({ count: listCount(alice), room: !!alice.client.getRoom(dm) }),
  );
  // Element marks DMs in m.direct; setAccountData waits for the account_data extension to echo it.
  await withTimeout("alice's m.direct to come back through the account_data extension", alice.client.setAccountData("m.direct", { [cfg.bob.userId]: [dm] }), 20000);
  check("alice's m.direct", alice.client.getAccountData("m.direct")?.getContent()?.[cfg.bob.userId]?.includes(dm), () => short(alice.client.getAccountData("m.direct")?.getContent()));
  pass("account_data: alice's m.direct came back through the account_data extension");
  // The DM has no name: the SDK names it from the heroes.
  soft("alice's DM named after bob (heroes)", /bob/.test(alice.client.getRoom(dm)?.name ?? ""), () => `name ${JSON.stringify(alice.client.getRoom(dm)?.name)}`);

  await waitFor(
    "bob's invite to the DM (invite_state in bob's list)",
    () => bob.client.getRoom(dm)?.getMyMembership() === "invite",
    () => ({ membership: bob.client.getRoom(dm)?.getMyMembership(), count: listCount(bob) }),
  );
  check("bob's list count with the invite", listCount(bob) === N + 1, () => `count ${listCount(bob)}`);
  pass("bob got the DM invite in his list (invite_state)");
  await bob.client.joinRoom(dm);
  // As Element does for an encrypted room on screen: all members.
  subscribe(alice, dm, ENCRYPTED_SUBSCRIPTION_NAME);
  subscribe(bob, dm, ENCRYPTED_SUBSCRIPTION_NAME);
  await waitFor(
    "bob's DM to become joined",
    () => bob.client.getRoom(dm)?.getMyMembership() === "join",
    () => ({ membership: bob.client.getRoom(dm)?.getMyMembership() }),
  );
  await waitFor(
    "alice to see bob join the DM",
    () => alice.client.getRoom(dm)?.getMember(cfg.bob.userId)?.membership === "join",
    () => ({ members: alice.client.getRoom(dm)?.getMembers().map((m) => `${m.userId}:${m.membership}`) }),
  );
  for (const c of [alice, bob]) {
    await waitFor(
      `${c.who}'s DM to be encrypted (m.room.encryption in required_state)`,
      () => c.client.getCrypto().isEncryptionEnabledInRoom(dm),
      null,
      15000,
    );
  }
  await waitFor(
    "both DM subscriptions to be answered (the room's m.room.create in the timeline)",
    () => [alice, bob].every((c) => c.client.getRoom(dm)?.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create")),
    () => Object.fromEntries([alice, bob].map((c) => [c.who, c.client.getRoom(dm)?.getLiveTimeline().getEvents().map((e) => e.getType())])),
    15000,
  ).catch((e) => soft("the DM subscriptions", false, e.message));
  timelineOrder(alice, dm, "the DM after its subscription widened the timeline");
  timelineOrder(bob, dm, "the DM after its subscription widened the timeline");
  pass("bob joined the encrypted DM; both clients see it encrypted");

  async function sendAndDecrypt(from, to, body) {
    const { event_id: id } = await from.client.sendTextMessage(dm, body);
    const ev = await waitFor(
      `${to.who} to receive ${from.who}'s encrypted message ${id}`,
      () => to.client.getRoom(dm)?.findEventById(id),
      () => ({ timeline: to.client.getRoom(dm)?.getLiveTimeline().getEvents().map((e) => `${e.getId()}:${e.getWireType()}`) }),
    );
    check(`${from.who}'s message on the wire`, ev.getWireType() === "m.room.encrypted", () => `wire type ${ev.getWireType()}`);
    // Sliding sync leaves timeline events encrypted until shown; the
    // room key may also arrive (to_device) after the event: retry.
    const clear = await waitFor(
      `${to.who} to decrypt ${from.who}'s message (room key through the to_device extension)`,
      async () => {
        await to.client.decryptEventIfNeeded(ev);
        return !ev.isDecryptionFailure() && ev.getClearContent()?.body === body && ev;
      },
      () => ({ decryptionFailure: ev.isDecryptionFailure(), reason: ev.decryptionFailureReason, content: ev.getContent() }),
    );
    check(`${to.who}'s clear text`, clear.getContent().body === body && clear.getType() === "m.room.message", () => short(clear.getContent()));
    return id;
  }
  step = "encrypted DM: alice → bob";
  const secret1 = `secret for bob ${Date.now()}`;
  const encToBob = await sendAndDecrypt(alice, bob, secret1);
  pass("encrypted DM: bob decrypted alice's message");
  step = "encrypted DM: bob → alice";
  const secret2 = `secret for alice ${Date.now()}`;
  const encToAlice = await sendAndDecrypt(bob, alice, secret2);
  pass("encrypted DM: alice decrypted bob's reply");

  // --- A reload: Element Web forgets pos and starts the connection again
  // (same device, no conn_id). Without a crypto store to keep, the new
  // client runs without crypto. ---
  step = "restart";
  alice.client.stopClient();
  const again = await start("alice again", cfg.alice, [[0, 9]], { crypto: false });
  check("the list count after a restart", listCount(again) === N + 1, () => `count ${listCount(again)}, want ${N + 1}`);
  const want = [dm, chat, ...newest.slice(1, 9)];
  await waitFor(
    "the 10 newest rooms again after the restart",
    () => want.every((id) => again.client.getRoom(id)),
    () => ({ missing: want.filter((id) => !again.client.getRoom(id)).map(nameOf), have: roomIds(again).map(nameOf) }),
    15000,
  );
  soft(
    "after a restart, only the rooms of the new connection's range",
    roomIds(again).every((id) => want.includes(id)),
    () => `rooms outside [0,9]: ${roomIds(again).filter((id) => !want.includes(id)).map(nameOf)}`,
  );
  {
    const last = again.client.getRoom(dm).getLiveTimeline().getEvents().at(-1);
    soft("the DM's latest event after the restart", last?.getId() === encToAlice, () => `latest ${last?.getId()} ${last?.getType()}, want ${encToAlice}`);
  }
  pass("restart: a new connection without pos gets the list (count and newest rooms) again");
  again.client.stopClient();

  clearTimeout(deadline);
  bob.client.stopClient();
  finish({
    ok: problems.length === 0,
    step: problems.length ? "end" : undefined,
    error: problems.length ? `${problems.length} problem(s), reported above` : undefined,
    checks: steps,
    problems,
    trace: problems.length ? trace : undefined,
    failures,
    chatRoom: chat,
    dmRoom: dm,
    encrypted: [
      { eventId: encToBob, body: secret1 },
      { eventId: encToAlice, body: secret2 },
    ],
  });
} catch (e) {
  fail(e);
}
