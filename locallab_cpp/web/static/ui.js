// Drawing the page: the conversation list, the messages, the figures under an answer, the
// API key dialog and downloads. Text from the model or the person goes in as textContent
// or through markdown.js, never as HTML.

import { copyText, renderMarkdown } from "./markdown.js";

export const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const number = new Intl.NumberFormat();

// ----- conversation list -------------------------------------------------------------

function dayLabel(time) {
  const day = new Date(time);
  const today = new Date();
  const start = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((start(today) - start(day)) / 86400000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days < 7) return "This week";
  return day.toLocaleDateString(undefined, { year: "numeric", month: "long" });
}

/** The sidebar's list, grouped by day; `on.select(id)` and `on.remove(id)` act on one. */
export function renderConversationList(target, conversations, currentId, on) {
  target.replaceChildren();
  let group = null;
  for (const conversation of conversations) {
    const label = dayLabel(conversation.updated || conversation.created || Date.now());
    if (label !== group) {
      group = label;
      target.append(el("li", "group", label));
    }
    const item = el("li", "conversation");
    item.dataset.id = conversation.id;
    if (conversation.id === currentId) item.classList.add("current");
    const open = el("button", "open", conversation.title || "New chat");
    open.type = "button";
    open.title = conversation.title || "New chat";
    open.addEventListener("click", () => on.select(conversation.id));
    const remove = el("button", "delete", "×");
    remove.type = "button";
    remove.title = "Delete this conversation";
    remove.setAttribute("aria-label", `Delete ${conversation.title || "conversation"}`);
    remove.addEventListener("click", (event) => {
      event.stopPropagation();
      on.remove(conversation.id);
    });
    item.append(open, remove);
    target.append(item);
  }
}

// ----- messages ----------------------------------------------------------------------

/** The figures under an answer: tokens, tokens per second, cached prompt tokens. */
export function statsParts(stats) {
  if (!stats) return [];
  const parts = [];
  if (stats.stopped) parts.push({ key: "stopped", text: "Stopped" });
  if (Number.isFinite(stats.completionTokens)) {
    const approx = stats.approximate ? "~" : "";
    parts.push({ key: "tokens", text: `${approx}${number.format(stats.completionTokens)} tokens` });
  }
  if (Number.isFinite(stats.tokensPerSecond) && stats.tokensPerSecond > 0) {
    parts.push({ key: "speed", text: `${stats.tokensPerSecond.toFixed(1)} tok/s` });
  }
  if (Number.isFinite(stats.cachedTokens)) {
    const of = Number.isFinite(stats.promptTokens) ? ` of ${number.format(stats.promptTokens)}` : "";
    parts.push({ key: "cached", text: `${number.format(stats.cachedTokens)}${of} prompt tokens cached` });
  }
  if (stats.finishReason === "length") parts.push({ key: "finish", text: "hit max tokens" });
  return parts;
}

function renderStats(target, stats) {
  target.replaceChildren();
  for (const part of statsParts(stats)) {
    const span = el("span", `stat stat-${part.key}`, part.text);
    target.append(span);
  }
  if (stats && Number.isFinite(stats.completionTokens)) {
    target.dataset.completionTokens = String(stats.completionTokens);
  }
  target.hidden = target.childElementCount === 0;
}

/** One message's element; `update(message, streaming)` redraws it in place. */
export function messageView(message) {
  const article = el("article", `message ${message.role}`);
  article.dataset.id = message.id;
  if (message.role === "user") {
    const bubble = el("div", "bubble");
    const text = el("div", "text");
    bubble.append(text);
    article.append(bubble);
    return {
      node: article,
      update(m) {
        text.textContent = m.content;
      },
    };
  }
  if (message.role === "error") {
    article.setAttribute("role", "alert");
    const bubble = el("div", "bubble");
    const title = el("strong", "error-title", "Error");
    const text = el("div", "text");
    bubble.append(title, text);
    article.append(bubble);
    return {
      node: article,
      update(m) {
        text.textContent = m.content;
      },
    };
  }
  const avatar = el("div", "avatar");
  avatar.setAttribute("aria-hidden", "true");
  const body = el("div", "bubble");
  const reasoning = el("details", "reasoning");
  const summary = el("summary", null, "Reasoning");
  const thoughts = el("div", "reasoning-body");
  reasoning.append(summary, thoughts);
  const answer = el("div", "answer markdown");
  const typing = el("div", "typing");
  typing.append(el("span"), el("span"), el("span"));
  const stats = el("div", "stats");
  const actions = el("div", "actions");
  const copy = el("button", "ghost small copy-answer", "Copy");
  copy.type = "button";
  actions.append(copy);
  body.append(reasoning, answer, typing, stats, actions);
  article.append(avatar, body);
  let current = message;
  copy.addEventListener("click", async () => {
    await copyText(current.content || "").catch(() => {});
    copy.textContent = "Copied";
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  let drawn = { content: null, reasoning: null };
  return {
    node: article,
    update(m, streaming = false) {
      current = m;
      article.classList.toggle("streaming", streaming);
      reasoning.hidden = !m.reasoning;
      if (m.reasoning !== drawn.reasoning) {
        thoughts.textContent = m.reasoning || "";
        summary.textContent = streaming && !m.content ? "Reasoning…" : "Reasoning";
      }
      if (m.content !== drawn.content) renderMarkdown(answer, m.content || "");
      drawn = { content: m.content, reasoning: m.reasoning };
      typing.hidden = !(streaming && !m.content && !m.reasoning);
      renderStats(stats, streaming ? null : m.stats);
      actions.hidden = streaming || !m.content;
    },
  };
}

// ----- the API key dialog ------------------------------------------------------------

let pendingKey = null;

/** Ask for an API key; resolves to the key, or null when the person cancels. */
export function askForKey(message) {
  const dialog = $("key-dialog");
  $("key-message").textContent = message || "This server asks for an API key.";
  const input = $("key-input");
  input.value = "";
  if (pendingKey) return pendingKey; // one dialog for all the requests that want it
  pendingKey = new Promise((resolve) => {
    const finish = (value) => {
      dialog.close();
      $("key-save").removeEventListener("click", save);
      $("key-cancel").removeEventListener("click", cancel);
      input.removeEventListener("keydown", keydown);
      dialog.removeEventListener("cancel", cancel);
      pendingKey = null;
      resolve(value);
    };
    const save = () => {
      const key = input.value.trim();
      if (key) finish(key);
      else input.focus();
    };
    const cancel = (event) => {
      if (event) event.preventDefault();
      finish(null);
    };
    const keydown = (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        save();
      }
    };
    $("key-save").addEventListener("click", save);
    $("key-cancel").addEventListener("click", cancel);
    input.addEventListener("keydown", keydown);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
    input.focus();
  });
  return pendingKey;
}

// ----- downloads ---------------------------------------------------------------------

/** Offer `text` as a file download (a Blob URL, revoked once the click was handled). */
export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a");
  link.href = url;
  link.download = filename;
  link.className = "offscreen";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A file name from a conversation's title. */
export function fileName(title, extension) {
  const stem = (title || "conversation")
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 60);
  return `${stem || "conversation"}.${extension}`;
}
