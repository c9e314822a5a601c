// Talking to the server: its OpenAI API, same origin. The API key (when the server wants
// one) goes in an Authorization header; a 401 asks the page for a key and tries again.

import { loadApiKey, saveApiKey } from "./store.js";

/** An error the server reported, with its message and HTTP status (0: no answer). */
export class ServerError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ServerError";
    this.status = status;
  }
}

let askForKey = async () => null;

/** Set how the page asks for an API key: `ask(message)` resolves to a key or null. */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

function errorMessage(body, fallback) {
  if (body && typeof body === "object") {
    const error = body.error;
    if (error && typeof error === "object" && typeof error.message === "string") return error.message;
    if (typeof error === "string") return error;
    if (typeof body.detail === "string") return body.detail;
  }
  return fallback;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  return new ServerError(errorMessage(body, `The server answered ${response.status} ${response.statusText}.`), response.status);
}

/** fetch() on this server with the key; on 401, ask for a key and retry until it works or
 * the person gives up. Other failures throw a ServerError with the server's message. */
export async function apiFetch(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = loadApiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...init, headers, cache: "no-store" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ServerError("The server cannot be reached. Is it still running?", 0);
    }
    if (response.status === 401) {
      const problem = await failure(response);
      const entered = await askForKey(key ? "That API key was not accepted." : problem.message);
      if (!entered) throw new ServerError("This server needs an API key.", 401);
      saveApiKey(entered);
      continue;
    }
    if (!response.ok) throw await failure(response);
    return response;
  }
}

/** The chat models the server offers: [{id, name, contextLength, loaded}]. */
export async function listModels() {
  const response = await apiFetch("/v1/models");
  const body = await response.json();
  return (body.data || [])
    .filter((m) => ((m.meta && m.meta.kind) || "chat") === "chat")
    .map((m) => ({
      id: m.id,
      name: (m.meta && m.meta.name) || m.id,
      contextLength: m.context_length || 0,
      loaded: Boolean(m.loaded),
    }));
}

/** Split an SSE byte stream into the data of its events (joined data: lines). */
async function* sseData(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const abort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", abort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (signal.aborted) {
        throw new DOMException("Stopped", "AbortError");
      }
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""));
        if (data.length) yield data.join("\n");
      }
    }
  } finally {
    signal.removeEventListener("abort", abort);
  }
}

/**
 * Stream one chat answer. `handlers.onDelta({content, reasoning})` gets each piece as it
 * arrives; resolves to {finishReason, usage} at the end. Aborting `signal` stops the
 * request: the server sees the connection close and cancels the generation.
 */
export async function streamChat({ model, messages, temperature, maxTokens, signal }, handlers) {
  const body = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (Number.isFinite(temperature)) body.temperature = temperature;
  if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  const response = await apiFetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  let finishReason = null;
  let usage = null;
  for await (const data of sseData(response.body, signal)) {
    if (data === "[DONE]") break;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      continue; // not ours to understand; skip it
    }
    if (chunk.error) throw new ServerError(errorMessage(chunk, "The generation failed."), 200);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      const content = typeof delta.content === "string" ? delta.content : "";
      const reasoning = typeof delta.reasoning_content === "string" ? delta.reasoning_content : "";
      if (content || reasoning) handlers.onDelta({ content, reasoning });
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return { finishReason, usage };
}
