// What the page keeps in this browser's localStorage: the conversations, the settings and
// the API key. Nothing of it is sent anywhere but to this server, in the requests it makes.

const CONVERSATIONS = "locallab.conversations";
const SETTINGS = "locallab.settings";
const API_KEY = "locallab.apiKey";

export const DEFAULT_SETTINGS = Object.freeze({
  model: "",
  system: "",
  temperature: 0.7,
  maxTokens: 512,
});

function load(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback; // unreadable (edited by hand, storage off): start afresh
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // full or disabled: the page works on, without keeping it
  }
}

export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Every kept conversation, most recently updated first. */
export function loadConversations() {
  const list = load(CONVERSATIONS, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages))
    .sort((a, b) => (b.updated || 0) - (a.updated || 0));
}

export function saveConversations(list) {
  return save(CONVERSATIONS, list);
}

export function createConversation(model) {
  const now = Date.now();
  return { id: newId(), title: "New chat", model, system: "", created: now, updated: now, messages: [] };
}

/** A title from the first thing the person asked. */
export function titleFrom(text) {
  const line = text.trim().split("\n")[0].trim();
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

export function loadSettings() {
  const stored = load(SETTINGS, {});
  return { ...DEFAULT_SETTINGS, ...(stored && typeof stored === "object" ? stored : {}) };
}

export function saveSettings(settings) {
  save(SETTINGS, settings);
}

export function loadApiKey() {
  try {
    return localStorage.getItem(API_KEY) || "";
  } catch {
    return "";
  }
}

export function saveApiKey(key) {
  try {
    if (key) localStorage.setItem(API_KEY, key);
    else localStorage.removeItem(API_KEY);
  } catch {
    // storage off: the key lasts until the page is closed
  }
}
