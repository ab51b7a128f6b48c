// A real OAuth 2.0 client against Tessera: openid-client registers itself
// (dynamic client registration) as a native app with a loopback redirect
// URI, starts the authorisation code flow with PKCE, headless Chromium
// (Debian's, driven by puppeteer-core) fills Tessera's login and consent
// pages, openid-client exchanges the code, refreshes and finally revokes;
// in between, matrix-js-sdk (from ../jssdk) syncs and sends a message with
// the access token. Driven by clientapi's TestOAuthBrowserCodeFlow, which
// passes {baseUrl, user, password, chromium} in TESSERA_OAUTH and reads
// the stdout line starting TESSERA_RESULT.

// matrix-js-sdk 43 wants Node 22; Node 20 lacks Promise.withResolvers.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

import http from "node:http";
import * as oidc from "openid-client";
import puppeteer from "puppeteer-core";

const cfg = JSON.parse(process.env.TESSERA_OAUTH);
const steps = [];
const timings = {};
for (const m of ["log", "info", "debug", "trace", "warn"]) console[m] = console.error;

function finish(result) {
  process.stdout.write("TESSERA_RESULT " + JSON.stringify({ ...result, steps, timings }) + "\n");
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => finish({ ok: false, error: "timed out" }), cfg.timeoutMs ?? 90000);

let browser;
try {
  const hs = new URL(cfg.baseUrl);
  // Matrix clients discover the server's metadata at auth_metadata, not
  // at RFC 8414's well-known URI: openid-client's discovery is pointed there.
  const matrixDiscovery = (url, init) => {
    const u = new URL(url);
    if (u.pathname.startsWith("/.well-known/oauth-authorization-server")) {
      return fetch(new URL("/_matrix/client/v1/auth_metadata", hs), init);
    }
    return fetch(url, init);
  };

  // 1. A loopback redirect URI: the native app's own listener.
  const callbacks = [];
  let onCallback;
  const listener = http.createServer((req, res) => {
    // Only the redirect counts: Chromium asks for /favicon.ico too.
    if (!req.url.startsWith("/callback")) {
      res.statusCode = 404;
      res.end();
      return;
    }
    callbacks.push(req.url);
    res.end("signed in; you can close this window");
    onCallback?.(req.url);
  });
  await new Promise((r) => listener.listen(0, "127.0.0.1", r));
  const redirectUri = `http://127.0.0.1:${listener.address().port}/callback`;

  // 2. Discovery and registration.
  const issuer = new URL("/", hs);
  const config = await oidc.dynamicClientRegistration(issuer, {
    client_name: "openid-client test", client_uri: "https://openid-client.example.org/",
    application_type: "native", redirect_uris: [redirectUri], token_endpoint_auth_method: "none",
    grant_types: ["authorization_code", "refresh_token"], response_types: ["code"],
  }, oidc.None(), { algorithm: "oauth2", [oidc.customFetch]: matrixDiscovery, execute: [oidc.allowInsecureRequests] });
  steps.push("registered " + config.clientMetadata().client_id);

  // 3. The authorisation request, in Chromium.
  const t0 = performance.now();
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const deviceId = "JSOAUTHDEV01";
  const authUrl = oidc.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri, scope: `urn:matrix:client:api:* urn:matrix:client:device:${deviceId}`,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: "S256", state,
  });
  browser = await puppeteer.launch({
    executablePath: cfg.chromium, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage();
  const gotCallback = new Promise((r) => { onCallback = r; });
  await page.goto(authUrl.href, { waitUntil: "load" });
  await page.type("#username", cfg.user);
  await page.type("#password", cfg.password);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("button[type=submit]")]);
  steps.push("logged in; page: " + (await page.title()));
  await Promise.all([gotCallback, page.click("button[value=approve]")]);
  steps.push("consented");
  const callbackUrl = new URL(callbacks.at(-1), redirectUri);

  // 4. The code exchange.
  const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state });
  timings.codeFlowMs = performance.now() - t0;
  steps.push("tokens; scope " + tokens.scope);
  if (!tokens.refresh_token || !tokens.scope.includes(deviceId)) throw new Error("token response: " + JSON.stringify(Object.keys(tokens)));

  // 5. matrix-js-sdk with the access token: whoami, a room, a message, a sync.
  const sdk = await import(new URL("../jssdk/node_modules/matrix-js-sdk/lib/index.js", import.meta.url));
  const whoami = await fetch(new URL("/_matrix/client/v3/account/whoami", hs), { headers: { authorization: `Bearer ${tokens.access_token}` } }).then((r) => r.json());
  if (whoami.device_id !== deviceId) throw new Error("whoami: " + JSON.stringify(whoami));
  const client = sdk.createClient({ baseUrl: cfg.baseUrl, accessToken: tokens.access_token, userId: whoami.user_id, deviceId });
  const { room_id: roomId } = await client.createRoom({ name: "oauth room" });
  const { event_id: eventId } = await client.sendTextMessage(roomId, "hello from openid-client");
  const synced = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (st, _p, data) => {
      if (st === "PREPARED") resolve();
      if (st === "ERROR") reject(new Error("sync error: " + data?.error));
    });
  });
  await client.startClient({ initialSyncLimit: 10 });
  await synced;
  const seen = client.getRoom(roomId)?.getLiveTimeline().getEvents().some((e) => e.getId() === eventId);
  client.stopClient();
  if (!seen) throw new Error("the message is not in the synced timeline");
  steps.push("matrix-js-sdk synced and sent " + eventId);

  // 6. Refresh (rotation), then revocation ends the session.
  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  if (refreshed.refresh_token === tokens.refresh_token) throw new Error("refresh token not rotated");
  const status = async (tok) => (await fetch(new URL("/_matrix/client/v3/account/whoami", hs), { headers: { authorization: `Bearer ${tok}` } })).status;
  if ((await status(refreshed.access_token)) !== 200) throw new Error("refreshed token refused");
  steps.push("refreshed");
  await oidc.tokenRevocation(config, refreshed.access_token);
  const after = await status(refreshed.access_token);
  if (after !== 401) throw new Error("revoked token answered " + after);
  steps.push("revoked");
  listener.close();
  await browser.close();
  finish({ ok: true, userId: whoami.user_id, deviceId });
} catch (e) {
  if (browser) await browser.close().catch(() => {});
  finish({ ok: false, error: String(e?.stack ?? e), cause: String(e?.cause?.message ?? "") + " " + JSON.stringify(e?.cause?.cause ?? null) });
}
