// A small Markdown renderer for model output, which is untrusted: it builds DOM nodes and
// sets only textContent and vetted attributes, never innerHTML, so no markup in the text
// can become an element. Covers what chat answers use: paragraphs, headings, lists, block
// quotes, rules, fenced code blocks (with a copy button), inline code, bold, italic, links.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const SAFE_URL = /^(https?:|mailto:)/i;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Copy `text` to the clipboard; the fallback serves pages the browser deems insecure. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function codeBlock(code, lang) {
  const wrap = el("div", "code-block");
  const bar = el("div", "code-bar");
  bar.append(el("span", "code-lang", lang || "text"));
  const copy = el("button", "copy-btn", "Copy");
  copy.type = "button";
  copy.addEventListener("click", async () => {
    try {
      await copyText(code);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  bar.append(copy);
  const pre = el("pre");
  const inner = el("code", null, code);
  if (lang) inner.dataset.lang = lang;
  pre.append(inner);
  wrap.append(bar, pre);
  return wrap;
}

// ----- inline ------------------------------------------------------------------------

// Delimited spans, tried in this order at each position.
const SPANS = [
  { open: "**", tag: "strong" },
  { open: "__", tag: "strong" },
  { open: "*", tag: "em" },
  { open: "_", tag: "em" },
  { open: "~~", tag: "del" },
];

function findClose(text, from, marker) {
  let at = text.indexOf(marker, from);
  while (at !== -1) {
    // A closing marker hugs its text: "a * b" is not emphasis.
    if (at > from && !/\s/.test(text[at - 1])) return at;
    at = text.indexOf(marker, at + 1);
  }
  return -1;
}

/** Append the inline content of `text` (code, emphasis, links, plain text) to `parent`. */
export function renderInline(text, parent) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  outer: while (i < text.length) {
    const ch = text[i];
    if (ch === "\\" && i + 1 < text.length && /[\\`*_{}[\]()#+\-.!~>]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const ticks = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end !== -1) {
        flush();
        parent.append(el("code", null, text.slice(i + ticks.length, end).trim() || " "));
        i = end + ticks.length;
        continue;
      }
      plain += ticks;
      i += ticks.length;
      continue;
    }
    if (ch === "[") {
      const link = /^\[([^\]\n]+)\]\(\s*([^\s()]+)(?:\s+"[^"]*")?\s*\)/.exec(text.slice(i));
      if (link) {
        flush();
        const url = link[2];
        if (SAFE_URL.test(url)) {
          const a = el("a");
          a.href = url;
          a.rel = "noopener noreferrer";
          a.target = "_blank";
          renderInline(link[1], a);
          a.title = url;
          parent.append(a);
        } else {
          // Not a web or mail address (javascript:, data:, relative): shown, not linked.
          renderInline(link[1], parent);
          parent.append(document.createTextNode(` (${url})`));
        }
        i += link[0].length;
        continue;
      }
    }
    for (const span of SPANS) {
      if (!text.startsWith(span.open, i)) continue;
      const start = i + span.open.length;
      // An opening marker hugs its text too, and "_" inside words (snake_case) is literal.
      if (start >= text.length || /\s/.test(text[start])) continue;
      if (span.open[0] === "_" && i > 0 && /\w/.test(text[i - 1])) continue;
      const end = findClose(text, start, span.open);
      if (end === -1) continue;
      if (span.open[0] === "_" && /\w/.test(text[end + span.open.length] || "")) continue;
      flush();
      const node = el(span.tag);
      renderInline(text.slice(start, end), node);
      parent.append(node);
      i = end + span.open.length;
      continue outer;
    }
    plain += ch;
    i += 1;
  }
  flush();
}

// ----- blocks ------------------------------------------------------------------------

function paragraph(lines) {
  const p = el("p");
  lines.forEach((line, n) => {
    if (n > 0) {
      // Two trailing spaces (or a backslash) make a hard break; else a space joins lines.
      if (/( {2,}|\\)$/.test(lines[n - 1])) p.append(el("br"));
      else p.append(document.createTextNode(" "));
    }
    renderInline(line.trim().replace(/\\$/, ""), p);
  });
  return p;
}

function isBlockStart(line) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    BULLET.test(line) ||
    ORDERED.test(line)
  );
}

function list(lines, start) {
  const first = BULLET.exec(lines[start]) || ORDERED.exec(lines[start]);
  const ordered = !BULLET.test(lines[start]);
  const indent = first[1].length;
  const node = el(ordered ? "ol" : "ul");
  if (ordered && first[2] !== "1") node.start = Number(first[2]);
  let i = start;
  let item = null;
  let itemLines = [];
  const close = () => {
    if (item) {
      item.append(renderBlocks(itemLines.join("\n")));
      node.append(item);
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const match = ordered ? ORDERED.exec(line) : BULLET.exec(line);
    if (match && match[1].length <= indent + 1) {
      close();
      item = el("li");
      itemLines = [match[3]];
    } else if (line.trim() === "") {
      // A blank line ends the list unless the next line goes on with it.
      const next = lines[i + 1];
      if (next === undefined) break;
      const nextItem = ordered ? ORDERED.exec(next) : BULLET.exec(next);
      if (!(nextItem && nextItem[1].length <= indent + 1) && !/^\s{2,}\S/.test(next)) break;
      itemLines.push("");
    } else if (/^\s{2,}\S/.test(line) || !isBlockStart(line)) {
      itemLines.push(line.replace(/^\s{1,4}/, ""));
    } else {
      break;
    }
    i += 1;
  }
  close();
  // Items separated by nothing but their own lines read tighter without paragraphs.
  for (const li of node.children) {
    if (li.children.length === 1 && li.firstChild.tagName === "P") {
      li.replaceChildren(...li.firstChild.childNodes);
    }
  }
  return [node, i];
}

/** Render Markdown `text` into a new DocumentFragment. An unclosed code fence (a streaming
 * answer cut mid-block) is shown as a code block all the same. */
export function renderBlocks(text) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1;
      out.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const h = el(`h${Math.min(heading[1].length + 2, 6)}`);
      renderInline(heading[2], h);
      out.append(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.append(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        quoted.push(QUOTE.exec(lines[i])[1]);
        i += 1;
      }
      const q = el("blockquote");
      q.append(renderBlocks(quoted.join("\n")));
      out.append(q);
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      const [node, next] = list(lines, i);
      out.append(node);
      i = next;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== "" && (para.length === 0 || !isBlockStart(lines[i]))) {
      para.push(lines[i]);
      i += 1;
    }
    out.append(paragraph(para));
  }
  return out;
}

/** Replace the content of `target` with `text` rendered as Markdown. */
export function renderMarkdown(target, text) {
  target.replaceChildren(renderBlocks(text));
}
