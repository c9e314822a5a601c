// The chat page: wires the controls to the conversation state, the server and storage.

import { ServerError, listModels, onKeyNeeded, streamChat } from "./chat.js";
import * as store from "./store.js";
import { $, askForKey, download, fileName, messageView, renderConversationList } from "./ui.js";

const state = {
  conversations: store.loadConversations(),
  current: null, // the conversation on screen
  models: [],
  settings: store.loadSettings(),
  controller: null, // the AbortController of the answer being streamed
  views: new Map(), // message id -> its view
};

onKeyNeeded(async (message) => {
  const key = await askForKey(message);
  $("forget-key").hidden = !key && !store.loadApiKey();
  return key;
});

// ----- conversations -----------------------------------------------------------------

function persist() {
  // A conversation nobody wrote in yet is not worth a place in the list.
  const kept = state.conversations.filter((c) => c.messages.length > 0);
  store.saveConversations(kept);
}

function drawList() {
  const shown = state.conversations.filter((c) => c.messages.length > 0 || c === state.current);
  renderConversationList($("conversations"), shown, state.current && state.current.id, {
    select: (id) => {
      openConversation(id);
      closeSidebar();
    },
    remove: removeConversation,
  });
}

function drawMessages() {
  const list = $("messages");
  list.replaceChildren();
  state.views.clear();
  for (const message of state.current.messages) {
    const view = messageView(message);
    view.update(message);
    state.views.set(message.id, view);
    list.append(view.node);
  }
  $("empty").hidden = state.current.messages.length > 0;
  scrollToEnd(true);
}

function openConversation(id) {
  if (state.controller) return; // an answer is being written: stop it first
  const found = state.conversations.find((c) => c.id === id);
  if (!found) return;
  state.current = found;
  if (found.model && state.models.some((m) => m.id === found.model)) selectModel(found.model);
  drawList();
  drawMessages();
}

function newConversation() {
  if (state.controller) return;
  const empty = state.conversations.find((c) => c.messages.length === 0);
  state.current = empty || store.createConversation(state.settings.model);
  if (!empty) state.conversations.unshift(state.current);
  drawList();
  drawMessages();
  $("prompt").focus();
}

function removeConversation(id) {
  if (state.controller && state.current && state.current.id === id) return;
  const conversation = state.conversations.find((c) => c.id === id);
  if (!conversation) return;
  if (conversation.messages.length && !confirm(`Delete “${conversation.title}”?`)) return;
  state.conversations = state.conversations.filter((c) => c.id !== id);
  persist();
  if (state.current && state.current.id === id) {
    state.current = null;
    newConversation();
  } else {
    drawList();
  }
}

// ----- models and settings -----------------------------------------------------------

function selectModel(id) {
  const select = $("model");
  select.value = id;
  const model = state.models.find((m) => m.id === id);
  $("model-context").textContent = model && model.contextLength ? `${model.contextLength.toLocaleString()} token context` : "";
  state.settings.model = id;
  store.saveSettings(state.settings);
}

async function loadModels() {
  const select = $("model");
  try {
    state.models = await listModels();
  } catch (error) {
    select.replaceChildren(new Option("No models", ""));
    showError(error);
    return;
  }
  select.replaceChildren(
    ...state.models.map((m) => {
      const context = m.contextLength ? ` · ${Math.round(m.contextLength / 1024) || "<1"}k ctx` : "";
      return new Option(`${m.name}${context}`, m.id);
    }),
  );
  if (state.models.length === 0) {
    select.append(new Option("No chat model", ""));
    return;
  }
  const wanted = [state.current && state.current.model, state.settings.model];
  const loaded = state.models.find((m) => m.loaded);
  const pick = wanted.find((id) => id && state.models.some((m) => m.id === id)) || (loaded || state.models[0]).id;
  selectModel(pick);
}

function drawSettings() {
  $("system").value = state.settings.system;
  $("temperature").value = String(state.settings.temperature);
  $("temperature-value").textContent = Number(state.settings.temperature).toFixed(2);
  $("max-tokens").value = String(state.settings.maxTokens);
  $("forget-key").hidden = !store.loadApiKey();
}

function readSettings() {
  const temperature = Number.parseFloat($("temperature").value);
  const maxTokens = Number.parseInt($("max-tokens").value, 10);
  state.settings.system = $("system").value;
  state.settings.temperature = Number.isFinite(temperature) ? temperature : store.DEFAULT_SETTINGS.temperature;
  state.settings.maxTokens = Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : store.DEFAULT_SETTINGS.maxTokens;
  $("temperature-value").textContent = state.settings.temperature.toFixed(2);
  store.saveSettings(state.settings);
}

// ----- sending -----------------------------------------------------------------------

function scrollToEnd(force = false) {
  const scroller = $("scroller");
  const near = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  if (force || near) scroller.scrollTop = scroller.scrollHeight;
}

function addMessage(message) {
  state.current.messages.push(message);
  const view = messageView(message);
  view.update(message, message.role === "assistant");
  state.views.set(message.id, view);
  $("messages").append(view.node);
  $("empty").hidden = true;
  scrollToEnd(true);
  return view;
}

function showError(error) {
  if (!state.current) return;
  const text = error instanceof ServerError ? error.message : `Something went wrong: ${error.message || error}`;
  addMessage({ id: store.newId(), role: "error", content: text });
}

function history(conversation) {
  const messages = [];
  if (conversation.system.trim()) messages.push({ role: "system", content: conversation.system });
  for (const m of conversation.messages) {
    if ((m.role === "user" || m.role === "assistant") && m.content) {
      messages.push({ role: m.role, content: m.content });
    }
  }
  return messages;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

async function send() {
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text || state.controller) return;
  const model = $("model").value;
  if (!model) {
    showError(new ServerError("Pick a model first (the server lists none for chat).", 0));
    return;
  }
  readSettings();
  const conversation = state.current;
  if (conversation.messages.length === 0) conversation.title = store.titleFrom(text);
  conversation.model = model;
  conversation.system = state.settings.system;
  prompt.value = "";
  autosize();
  addMessage({ id: store.newId(), role: "user", content: text });
  const answer = { id: store.newId(), role: "assistant", content: "", reasoning: "", model, stats: null };
  const view = addMessage(answer);
  conversation.updated = Date.now();
  // The person's message is kept even if the tab closes mid-answer.
  if (!state.conversations.includes(conversation)) state.conversations.unshift(conversation);
  persist();
  drawList();

  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  let first = 0;
  let pieces = 0;
  let frame = 0;
  const redraw = () => {
    frame = 0;
    view.update(answer, true);
    scrollToEnd();
  };
  try {
    const result = await streamChat(
      {
        model,
        messages: history(conversation),
        temperature: state.settings.temperature,
        maxTokens: state.settings.maxTokens,
        signal: controller.signal,
      },
      {
        onDelta({ content, reasoning }) {
          if (!first) first = performance.now();
          pieces += 1;
          answer.content += content;
          answer.reasoning += reasoning;
          if (!frame) frame = requestAnimationFrame(redraw);
        },
      },
    );
    answer.stats = figures(result.usage, first, pieces, false, result.finishReason);
  } catch (error) {
    if (error.name === "AbortError") {
      answer.stats = figures(null, first, pieces, true, null);
    } else {
      answer.stats = figures(null, first, pieces, false, null);
      if (frame) cancelAnimationFrame(frame);
      view.update(answer);
      if (!answer.content && !answer.reasoning) {
        conversation.messages = conversation.messages.filter((m) => m !== answer);
        view.node.remove();
        state.views.delete(answer.id);
      }
      showError(error);
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    state.controller = null;
    setBusy(false);
    view.update(answer);
    conversation.updated = Date.now();
    persist();
    drawList();
    scrollToEnd();
    prompt.focus();
  }
}

/** The figures under an answer. Speed is measured here, from the first piece to the end. */
function figures(usage, first, pieces, stopped, finishReason) {
  const seconds = first ? (performance.now() - first) / 1000 : 0;
  const tokens = usage ? usage.completion_tokens : pieces;
  const details = (usage && usage.prompt_tokens_details) || {};
  return {
    completionTokens: tokens,
    approximate: !usage, // a stopped stream ends before its usage chunk: pieces counted
    promptTokens: usage ? usage.prompt_tokens : undefined,
    cachedTokens: Number.isFinite(details.cached_tokens) ? details.cached_tokens : undefined,
    tokensPerSecond: seconds > 0 && tokens > 1 ? (tokens - 1) / seconds : undefined,
    seconds,
    finishReason,
    stopped,
  };
}

function stop() {
  if (state.controller) state.controller.abort();
}

// ----- export ------------------------------------------------------------------------

function exportable(conversation) {
  return {
    title: conversation.title,
    model: conversation.model,
    system: conversation.system || "",
    created: new Date(conversation.created).toISOString(),
    updated: new Date(conversation.updated).toISOString(),
    messages: conversation.messages
      .filter((m) => m.role === "user" || m.role === "assistant")
      .map((m) => {
        const out = { role: m.role, content: m.content };
        if (m.reasoning) out.reasoning = m.reasoning;
        if (m.stats) out.stats = m.stats;
        return out;
      }),
  };
}

function asMarkdown(conversation) {
  const data = exportable(conversation);
  const lines = [`# ${data.title}`, "", `Model: ${data.model || "?"} · ${data.created}`, ""];
  if (data.system) lines.push("## System", "", data.system, "");
  for (const m of data.messages) {
    lines.push(m.role === "user" ? "## You" : "## Assistant", "");
    if (m.reasoning) lines.push("<details><summary>Reasoning</summary>", "", m.reasoning, "", "</details>", "");
    lines.push(m.content, "");
  }
  return lines.join("\n");
}

function exportCurrent(kind) {
  const conversation = state.current;
  if (!conversation || conversation.messages.length === 0) return;
  if (kind === "json") {
    download(fileName(conversation.title, "json"), JSON.stringify(exportable(conversation), null, 2), "application/json");
  } else {
    download(fileName(conversation.title, "md"), asMarkdown(conversation), "text/markdown");
  }
}

// ----- layout ------------------------------------------------------------------------

function autosize() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, 240)}px`;
}

function openSidebar() {
  $("app").classList.add("sidebar-open");
  $("scrim").hidden = false;
}

function closeSidebar() {
  $("app").classList.remove("sidebar-open");
  $("scrim").hidden = true;
}

function wire() {
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    newConversation();
    closeSidebar();
  });
  $("model").addEventListener("change", (event) => selectModel(event.target.value));
  $("prompt").addEventListener("input", autosize);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) stop();
  });
  $("toggle-settings").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
  });
  for (const id of ["system", "temperature", "max-tokens"]) {
    $(id).addEventListener("input", readSettings);
  }
  $("forget-key").addEventListener("click", () => {
    store.saveApiKey("");
    $("forget-key").hidden = true;
  });
  $("export-json").addEventListener("click", () => exportCurrent("json"));
  $("export-md").addEventListener("click", () => exportCurrent("md"));
  $("toggle-sidebar").addEventListener("click", openSidebar);
  $("scrim").addEventListener("click", closeSidebar);
  window.addEventListener("storage", (event) => {
    // Another tab changed the kept conversations: show them, unless an answer is running.
    if (event.key === "locallab.conversations" && !state.controller) {
      const id = state.current && state.current.id;
      state.conversations = store.loadConversations();
      state.current = state.conversations.find((c) => c.id === id) || state.current;
      drawList();
    }
  });
}

async function main() {
  wire();
  drawSettings();
  state.current = state.conversations[0] || null;
  if (state.current) {
    drawList();
    drawMessages();
  } else {
    newConversation();
  }
  await loadModels();
  $("prompt").focus();
  document.body.dataset.ready = "true"; // for the browser test: the models are listed
}

main();
