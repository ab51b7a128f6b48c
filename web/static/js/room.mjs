// The chat view: timeline (newest at the bottom, older on scroll up),
// composer (Markdown, replies, edits, files), typing, receipts, members.

import { html, useState, useEffect, useRef, useLayoutEffect } from "../vendor/preact-htm-3.1.1.mjs";
import { sanitize, markdownContent, stripReplyFallback } from "./format.mjs";
import { errorText } from "./errors.mjs";
import { Members } from "./members.mjs";
import { CallPanel, isVideoRoom, callMembers } from "./call.mjs";

const ENCRYPTED_TEXT = "encrypted: open this room in an app with end-to-end encryption";

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// MediaImage shows authenticated media: fetched with the token in a
// header, displayed through an object URL.
export function MediaImage({ client, mxc, alt, thumb }) {
  const [src, setSrc] = useState(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let url = null;
    let live = true;
    client.mediaBlob(mxc, thumb)
      .catch(() => client.mediaBlob(mxc, 0))
      .then((u) => {
        url = u;
        if (live) setSrc(u);
        else URL.revokeObjectURL(u);
      })
      .catch(() => live && setFailed(true));
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [mxc]);
  if (failed) return html`<span class="muted">(image unavailable)</span>`;
  return src ? html`<img src=${src} alt=${alt} class="msgimage" />` : html`<span class="imgph" aria-label="Loading image"></span>`;
}

function FileLink({ client, content }) {
  const download = async (ev) => {
    ev.preventDefault();
    const url = await client.mediaBlob(content.url, 0);
    const a = document.createElement("a");
    a.href = url;
    a.download = content.filename || content.body || "file";
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };
  return html`<a href="#" onClick=${download} class="file">Download ${content.filename || content.body}</a>`;
}

function Body({ client, room, ev }) {
  if (room.redacted.has(ev.event_id)) return html`<span class="muted">Message deleted</span>`;
  if (ev.type === "m.room.encrypted") return html`<span class="encrypted">${ENCRYPTED_TEXT}</span>`;
  const edit = room.edits.get(ev.event_id);
  const content = (edit && edit.content["m.new_content"]) || ev.content;
  let inner;
  switch (content.msgtype) {
    case "m.image":
      inner = content.url ? html`<${MediaImage} client=${client} mxc=${content.url} alt=${content.body || "image"} thumb=${320} />` : html`<span class="muted">(encrypted image)</span>`;
      break;
    case "m.file":
    case "m.video":
    case "m.audio":
      inner = content.url ? html`<${FileLink} client=${client} content=${content} />` : html`<span class="muted">(encrypted file)</span>`;
      break;
    case "m.emote":
      inner = html`<i>* ${client.displayName(room, ev.sender)} ${content.body}</i>`;
      break;
    default:
      if (content.format === "org.matrix.custom.html" && typeof content.formatted_body === "string") {
        inner = html`<div class="html" dangerouslySetInnerHTML=${{ __html: sanitize(content.formatted_body) }}></div>`;
      } else {
        const rel = ev.content["m.relates_to"];
        const body = rel && rel["m.in_reply_to"] ? stripReplyFallback(content.body) : content.body;
        inner = html`<span class="text">${String(body === undefined ? "" : body)}</span>`;
      }
  }
  return html`${inner}${edit && html`<span class="muted edited"> (edited)</span>`}`;
}

function ReplyQuote({ client, room, ev }) {
  const rel = ev.content && ev.content["m.relates_to"];
  const target = rel && rel["m.in_reply_to"] && rel["m.in_reply_to"].event_id;
  if (!target) return null;
  const orig = room.byId.get(target);
  return html`<blockquote class="reply">
    ${orig ? html`<b>${client.displayName(room, orig.sender)}</b> ${room.redacted.has(target) ? "(deleted)" : String((orig.content && orig.content.body) || "")}` : "In reply to an older message"}
  </blockquote>`;
}

// stateText describes membership and room changes in a line.
function stateText(client, room, ev) {
  const who = client.displayName(room, ev.sender);
  const c = ev.content || {};
  switch (ev.type) {
    case "m.room.member": {
      const target = c.displayname || ev.state_key;
      const prev = (ev.unsigned && ev.unsigned.prev_content) || {};
      switch (c.membership) {
        case "join": return prev.membership === "join" ? `${target} changed their profile` : `${target} joined`;
        case "invite": return `${who} invited ${target}`;
        case "leave": return ev.sender === ev.state_key ? `${prev.displayname || ev.state_key} left` : `${who} removed ${prev.displayname || ev.state_key}`;
        case "ban": return `${who} banned ${prev.displayname || ev.state_key}`;
        default: return null;
      }
    }
    case "m.room.name": return `${who} named the room "${c.name || ""}"`;
    case "m.room.topic": return `${who} set the topic to "${c.topic || ""}"`;
    case "m.room.create": return `${who} created the room`;
    case "m.room.encryption": return `${who} turned on end-to-end encryption`;
    default: return null;
  }
}

// continues says whether ev follows a message of the same sender closely
// enough to be shown without repeating the sender and time.
function continues(prev, ev) {
  return !!prev && prev.sender === ev.sender && prev.type === "m.room.message" && ev.type === "m.room.message" &&
    ev.origin_server_ts - prev.origin_server_ts < 5 * 60 * 1000;
}

function Event({ client, room, ev, onReply, onEdit, seenBy, continued }) {
  if (ev.type !== "m.room.message" && ev.type !== "m.room.encrypted") {
    const t = stateText(client, room, ev);
    return t ? html`<li class="stateline">${t}</li>` : null;
  }
  const mine = ev.sender === client.userId;
  const deleted = room.redacted.has(ev.event_id);
  const del = async () => {
    if (confirm("Delete this message?")) await client.redact(room.id, ev.event_id).catch((e) => alert(errorText(e)));
  };
  return html`
    <li class=${`msg ${mine ? "mine" : ""} ${continued ? "continued" : ""}`} data-event-id=${ev.event_id} tabindex="0">
      <div class=${continued ? "meta visually-hidden" : "meta"}><b class="sender">${client.displayName(room, ev.sender)}</b> <time>${time(ev.origin_server_ts)}</time></div>
      <${ReplyQuote} client=${client} room=${room} ev=${ev} />
      <div class="content"><${Body} client=${client} room=${room} ev=${ev} /></div>
      ${!deleted && ev.type === "m.room.message" && html`<div class="msgactions">
        <button onClick=${() => onReply(ev)} aria-label="Reply">Reply</button>
        ${mine && ev.content.msgtype === "m.text" && html`<button onClick=${() => onEdit(ev)} aria-label="Edit">Edit</button>`}
        ${(mine || client.canDo(room, "redact")) && html`<button onClick=${del} aria-label="Delete">Delete</button>`}
      </div>`}
      ${seenBy.length > 0 && html`<div class="receipts" aria-label="Read receipts">Seen by ${seenBy.join(", ")}</div>`}
    </li>`;
}

function Composer({ client, room, replyTo, editing, onDone }) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const typingSent = useRef(0);
  const input = useRef(null);
  const fileInput = useRef(null);
  useEffect(() => {
    if (editing) setText(editing.content.body || "");
    if ((editing || replyTo) && input.current) input.current.focus();
  }, [editing, replyTo]);
  const encrypted = client.isEncrypted(room);
  const onInput = (ev) => {
    setText(ev.target.value);
    const now = Date.now();
    if (ev.target.value && now - typingSent.current > 3000) {
      typingSent.current = now;
      client.typing(room.id, true).catch(() => {});
    } else if (!ev.target.value && typingSent.current) {
      typingSent.current = 0;
      client.typing(room.id, false).catch(() => {});
    }
  };
  const send = async (ev) => {
    if (ev) ev.preventDefault();
    const body = text.trim();
    if (!body) return;
    let content = markdownContent(body);
    if (editing) {
      content = {
        msgtype: "m.text",
        body: `* ${content.body}`,
        "m.new_content": content,
        "m.relates_to": { rel_type: "m.replace", event_id: editing.event_id },
      };
    } else if (replyTo) {
      content["m.relates_to"] = { "m.in_reply_to": { event_id: replyTo.event_id } };
    }
    setText("");
    setError("");
    typingSent.current = 0;
    onDone();
    try {
      await client.sendEvent(room.id, "m.room.message", content);
      client.typing(room.id, false).catch(() => {});
    } catch (e) {
      setText(body);
      setError(errorText(e));
    }
  };
  const onKey = (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) send(ev);
    if (ev.key === "Escape") onDone();
  };
  const upload = async (ev) => {
    const file = ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    setError("");
    try {
      const url = await client.upload(file);
      const image = file.type.startsWith("image/");
      await client.sendEvent(room.id, "m.room.message", {
        msgtype: image ? "m.image" : "m.file",
        body: file.name,
        filename: file.name,
        url,
        info: { mimetype: file.type, size: file.size },
      });
    } catch (e) {
      setError(errorText(e));
    }
  };
  if (encrypted) return html`<p class="composer encrypted">This room is end-to-end encrypted: open it in an app with end-to-end encryption to send messages.</p>`;
  return html`
    <form class="composer" onSubmit=${send}>
      ${(replyTo || editing) && html`<div class="replying">${editing ? "Editing" : `Replying to ${client.displayName(room, replyTo.sender)}`} <button type="button" onClick=${onDone} aria-label="Cancel">✕</button></div>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="row">
        <button type="button" onClick=${() => fileInput.current.click()} aria-label="Attach a file" title="Attach a file" class="attach">+</button>
        <input type="file" ref=${fileInput} onChange=${upload} hidden id="fileinput" />
        <textarea ref=${input} rows="1" value=${text} onInput=${onInput} onKeyDown=${onKey} aria-label="Message" placeholder="Message (Markdown)" id="composer"></textarea>
        <button type="submit" class="primary">Send</button>
      </div>
    </form>`;
}

export function RoomView({ client, roomId }) {
  const room = client.room(roomId);
  const list = useRef(null);
  const stick = useRef(true);
  const prevHeight = useRef(0);
  const [replyTo, setReplyTo] = useState(null);
  const [editing, setEditing] = useState(null);
  const [panel, setPanel] = useState(null);
  // Video rooms open on their call; other rooms show it on demand.
  const video = isVideoRoom(room);
  const [showCall, setShowCall] = useState(video);
  useEffect(() => {
    if (video) setShowCall(true);
  }, [video]);
  const [error, setError] = useState("");
  const name = client.roomName(room);
  const topic = room.stateEvent("m.room.topic");

  // Keep the newest message in view unless the user scrolled up; after
  // loading older messages, keep what they were looking at in place.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (stick.current) el.scrollTop = el.scrollHeight;
    else if (prevHeight.current && el.scrollHeight !== prevHeight.current) el.scrollTop += el.scrollHeight - prevHeight.current;
    prevHeight.current = el.scrollHeight;
  });
  // Fill the view: a short timeline loads older messages at once.
  useEffect(() => {
    const el = list.current;
    if (el && room.membership === "join" && !room.atStart && !room.backfilling && el.scrollHeight <= el.clientHeight + 40) {
      client.backfill(roomId).catch((e) => setError(errorText(e)));
    }
  });
  // Read receipt for the newest event while the page is visible.
  const last = room.timeline[room.timeline.length - 1];
  useEffect(() => {
    if (!last || room.membership !== "join" || document.visibilityState !== "visible") return;
    if (last.sender !== client.userId || room.unread) {
      client.markRead(roomId, last.event_id).catch(() => {});
      room.unread = 0;
    }
  }, [last && last.event_id]);
  useEffect(() => {
    const vis = () => {
      const l = room.timeline[room.timeline.length - 1];
      if (document.visibilityState === "visible" && l) client.markRead(roomId, l.event_id).catch(() => {});
    };
    document.addEventListener("visibilitychange", vis);
    return () => document.removeEventListener("visibilitychange", vis);
  }, [roomId]);

  const onScroll = (ev) => {
    const el = ev.target;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 200 && !room.atStart) client.backfill(roomId).catch((e) => setError(errorText(e)));
  };

  if (room.membership === "invite") {
    return html`<section class="room"><p>You are invited to ${name}. Accept or decline in the list.</p></section>`;
  }

  // Who has read up to which event: shown under that event.
  const seen = new Map();
  for (const [user, eventId] of room.receipts) {
    if (user === client.userId) continue;
    const names = seen.get(eventId) || [];
    names.push(client.displayName(room, user));
    seen.set(eventId, names);
  }
  const inCall = callMembers(room).length;
  const typing = room.typing.filter((u) => u !== client.userId).map((u) => client.displayName(room, u));
  return html`
    <section class="room" aria-label=${name}>
      <header class="roomheader">
        <a href="#/" class="back" aria-label="Back to the list">‹</a>
        <div class="title"><h1 id="roomname">${name}</h1>${topic && topic.content.topic && html`<p class="topic">${topic.content.topic}</p>`}</div>
        ${room.membership === "join" && html`
          <button onClick=${() => setShowCall(!showCall)} aria-pressed=${showCall} id="callbutton">${inCall ? `Call (${inCall})` : "Call"}</button>
          <button onClick=${() => setPanel(panel === "members" ? null : "members")} aria-pressed=${panel === "members"} id="membersbutton">Members</button>`}
      </header>
      ${client.isEncrypted(room) && html`<p class="banner encrypted" role="note">Messages here are end-to-end encrypted: open this room in an app with end-to-end encryption to read them.</p>`}
      ${showCall && room.membership === "join" && html`<${CallPanel} client=${client} room=${room} />`}
      <div class="roombody">
        <ol class="timeline" ref=${list} onScroll=${onScroll} aria-label="Messages" aria-live="polite" id="timeline">
          ${room.atStart ? html`<li class="stateline">Start of the conversation</li>` : html`<li class="stateline">${room.backfilling ? "Loading older messages…" : ""}</li>`}
          ${room.timeline.map((ev, i) => html`<${Event} key=${ev.event_id} client=${client} room=${room} ev=${ev}
              seenBy=${seen.get(ev.event_id) || []} continued=${continues(room.timeline[i - 1], ev)}
              onReply=${(e) => { setEditing(null); setReplyTo(e); }}
              onEdit=${(e) => { setReplyTo(null); setEditing(e); }} />`)}
        </ol>
        ${panel === "members" && html`<${Members} client=${client} room=${room} />`}
      </div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <p class="typing" aria-live="polite" id="typing">${typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : ""}</p>
      ${room.membership === "join"
        ? html`<${Composer} client=${client} room=${room} replyTo=${replyTo} editing=${editing} onDone=${() => { setReplyTo(null); setEditing(null); }} />`
        : html`<p class="muted">You left this room.</p>`}
    </section>`;
}
