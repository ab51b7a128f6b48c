// Runs matrix-js-sdk as Element Web runs it against a Tessera server:
// lazy-loaded members, Rust crypto (matrix-sdk-crypto-wasm), an encrypted
// room between two users; alice sends an encrypted message and bob must
// decrypt it. Driven by clientapi's TestJSSDKEncryptedRoom, which passes
// the server and the two users' sessions in TESSERA_JSSDK (JSON) and reads
// the line of stdout that starts with TESSERA_RESULT: {"ok":true,...} or {"ok":false,"error":...}.

// matrix-js-sdk 43 wants Node 22; Node 20 lacks Promise.withResolvers.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");

const cfg = JSON.parse(process.env.TESSERA_JSSDK);
const log = [];
// The SDK logs to the console: all of it to stderr, which the test shows
// when it fails; stdout carries only the result line.
logger.setLevel(process.env.TESSERA_JSSDK_DEBUG ? "debug" : "info");
for (const m of ["log", "info", "debug", "trace", "warn"]) console[m] = console.error;

function finish(result) {
  process.stdout.write("TESSERA_RESULT " + JSON.stringify(result) + "\n");
  process.exit(result.ok ? 0 : 1);
}

const deadline = setTimeout(() => finish({ ok: false, error: "timed out", log }), cfg.timeoutMs ?? 60000);

// Requests the SDK makes that fail, for the report.
const failures = [];
function fetchFn(url, init) {
  return fetch(url, init).then((res) => {
    if (!res.ok) {
      failures.push(`${init?.method ?? "GET"} ${new URL(url).pathname}${new URL(url).search} -> ${res.status}`);
    }
    return res;
  });
}

async function start(user) {
  const client = sdk.createClient({
    baseUrl: cfg.baseUrl,
    accessToken: user.accessToken,
    userId: user.userId,
    deviceId: user.deviceId,
    fetchFn,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`${user.userId}: sync error: ${data?.error}`));
    });
  });
  // Element Web's options: members loaded lazily, a short initial timeline.
  await client.startClient({ lazyLoadMembers: true, initialSyncLimit: 20 });
  await prepared;
  return client;
}

function waitFor(what, pred, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    const iv = setInterval(() => {
      try {
        const v = pred();
        if (v) {
          clearTimeout(t);
          clearInterval(iv);
          resolve(v);
        }
      } catch (e) {
        clearTimeout(t);
        clearInterval(iv);
        reject(e);
      }
    }, 50);
  });
}

try {
  const alice = await start(cfg.alice);
  const bob = await start(cfg.bob);
  log.push("both clients prepared");

  // alice makes an encrypted room as Element does, and invites bob.
  const { room_id: roomId } = await alice.createRoom({
    preset: "private_chat",
    invite: [cfg.bob.userId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  log.push(`room ${roomId}`);
  await waitFor("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
  await bob.joinRoom(roomId);
  await waitFor("alice to see bob join", () => alice.getRoom(roomId)?.getMember(cfg.bob.userId)?.membership === "join");
  await waitFor("alice's room to be encrypted", () => alice.getCrypto().isEncryptionEnabledInRoom(roomId));
  log.push("bob joined");

  // Bob decrypts what alice sends.
  const body = `secret ${Date.now()}`;
  const decrypted = new Promise((resolve) => {
    bob.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
      if (ev.getRoomId() === roomId && ev.getContent()?.body === body) resolve(ev);
    });
  });
  const { event_id: eventId } = await alice.sendTextMessage(roomId, body);
  log.push(`sent ${eventId}`);
  const ev = await Promise.race([
    decrypted,
    new Promise((_, reject) => setTimeout(() => reject(new Error("bob did not decrypt the message")), 30000)),
  ]);
  const wire = ev.getWireType();
  clearTimeout(deadline);
  alice.stopClient();
  bob.stopClient();
  finish({ ok: true, eventId, wireType: wire, body: ev.getContent().body, failures, log });
} catch (e) {
  finish({ ok: false, error: String(e?.stack ?? e), failures, log });
}
