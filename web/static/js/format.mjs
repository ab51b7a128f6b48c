// Message formatting: Markdown to HTML for what the user sends (as
// Element does), and sanitizing of the HTML other clients send. Nothing
// from another user ever reaches the DOM except as text or through
// sanitize().

import { marked } from "../vendor/marked-18.3.0.mjs";
import DOMPurify from "../vendor/dompurify-3.5.0.mjs";

// The tags and attributes the spec suggests clients allow in
// formatted_body (client-server API, "m.room.message msgtypes").
const ALLOWED_TAGS = [
  "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup", "sub", "li", "b",
  "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead", "tbody", "tr", "th", "td",
  "caption", "pre", "span", "details", "summary",
];
const ALLOWED_ATTR = ["href", "start", "colspan", "rowspan", "class"];

const purifier = DOMPurify(window);
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    // Only web and mail links; javascript:, data: and the rest go.
    if (!/^(https?:|mailto:)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.hasAttribute("class") && !/^language-[a-z0-9+-]+$/i.test(node.getAttribute("class"))) {
    node.removeAttribute("class");
  }
});

// sanitize returns HTML safe to set as innerHTML: only the allowed tags
// and attributes survive, with no script, style or event handler.
export function sanitize(html) {
  return purifier.sanitize(String(html), {
    ALLOWED_TAGS,
    ALLOWED_ATTR: ALLOWED_ATTR.concat(["target", "rel"]),
    ALLOW_DATA_ATTR: false,
    // mx-reply is the spec's reply fallback: drop it and its contents
    // (besides DOMPurify's own list: script, style, svg, math, ...).
    ADD_FORBID_CONTENTS: ["mx-reply"],
    KEEP_CONTENT: true,
  });
}

marked.setOptions({ gfm: true, breaks: true });

// markdown turns what the user typed into the content of an m.text
// message: formatted_body only when the Markdown made any formatting,
// as Element does, so plain text stays plain.
export function markdownContent(text) {
  const content = { msgtype: "m.text", body: text };
  // Raw HTML in the input is text, not markup.
  const escaped = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  let html = marked.parse(escaped, { async: false }).trim();
  // One paragraph with at most line breaks: nothing was formatted.
  const plain = /^<p>((?:[^<]|<br>)*)<\/p>$/.exec(html);
  if (plain) return content;
  html = sanitize(html);
  content.format = "org.matrix.custom.html";
  content.formatted_body = html;
  return content;
}

// stripReplyFallback removes the "> <@user> ..." lines a reply's body
// quotes from the message it answers.
export function stripReplyFallback(body) {
  const lines = String(body || "").split("\n");
  let i = 0;
  while (i < lines.length && lines[i].startsWith("> ")) i++;
  if (i > 0 && lines[i] === "") i++;
  return i > 0 ? lines.slice(i).join("\n") : body;
}
