// Markdown to DOM nodes, safely: every piece of text reaches the page through `textContent` or
// `createTextNode`, never as HTML, so model output and tool results cannot run as markup or
// script. Covers what chat answers use: paragraphs, headings, fenced code, inline code, bold,
// italic, links (http, https, mailto only), lists, block quotes and tables.

const SAFE_LINK = /^(https?:|mailto:)/i;

/** Renders `text` into a fragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1;
      const pre = el("pre");
      const code = el("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      fragment.append(pre);
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2);
      const h = el(`h${level}`);
      inline(h, heading[2]);
      fragment.append(h);
      i += 1;
      continue;
    }
    if (isTableStart(lines, i)) {
      const rows = [];
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
        rows.push(lines[i]);
        i += 1;
      }
      fragment.append(table(rows));
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
    if (item) {
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const next = lines[i].match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
        if (!next || /\d/.test(next[1]) !== ordered) break;
        const li = el("li");
        inline(li, next[2]);
        list.append(li);
        i += 1;
      }
      fragment.append(list);
      continue;
    }
    if (line.startsWith(">")) {
      const quoted = [];
      while (i < lines.length && lines[i].startsWith(">")) {
        quoted.push(lines[i].replace(/^>\s?/, ""));
        i += 1;
      }
      const quote = el("blockquote");
      quote.append(renderMarkdown(quoted.join("\n")));
      fragment.append(quote);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) {
      paragraph.push(lines[i]);
      i += 1;
    }
    const p = el("p");
    paragraph.forEach((part, n) => {
      if (n > 0) p.append(el("br"));
      inline(p, part);
    });
    fragment.append(p);
  }
  return fragment;
}

function startsBlock(lines, i) {
  const line = lines[i];
  return (
    /^\s*(```|~~~)/.test(line) ||
    /^#{1,6}\s/.test(line) ||
    /^\s*([-*+]|\d+[.)])\s+/.test(line) ||
    line.startsWith(">") ||
    isTableStart(lines, i)
  );
}

function isTableStart(lines, i) {
  return (
    lines[i].includes("|") &&
    i + 1 < lines.length &&
    /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/.test(lines[i + 1])
  );
}

function cells(row) {
  return row
    .trim()
    .replace(/^\|/, "")
    .replace(/\|$/, "")
    .split("|")
    .map((c) => c.trim());
}

function table(rows) {
  const wrap = el("div");
  wrap.className = "table-wrap";
  const t = el("table");
  const head = el("thead");
  const tr = el("tr");
  for (const cell of cells(rows[0])) {
    const th = el("th");
    inline(th, cell);
    tr.append(th);
  }
  head.append(tr);
  t.append(head);
  const body = el("tbody");
  for (const row of rows.slice(2)) {
    const r = el("tr");
    for (const cell of cells(row)) {
      const td = el("td");
      inline(td, cell);
      r.append(td);
    }
    body.append(r);
  }
  t.append(body);
  wrap.append(t);
  return wrap;
}

// Inline spans: `code`, **bold**, *italic* / _italic_, [text](url).
// Underscores count only at word boundaries (`snake_case_names` stay as they are).
const INLINE =
  /(`+)([^`]+?)\1|\*\*([^*]+?)\*\*|(?<!\w)__([^_]+?)__(?!\w)|\*([^*\s][^*]*?)\*|(?<!\w)_([^_\s][^_]*?)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/g;

function inline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    if (m[2] !== undefined) {
      const code = el("code");
      code.textContent = m[2];
      parent.append(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const strong = el("strong");
      inline(strong, m[3] ?? m[4]);
      parent.append(strong);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      const em = el("em");
      inline(em, m[5] ?? m[6]);
      parent.append(em);
    } else if (SAFE_LINK.test(m[8])) {
      const a = el("a");
      a.href = m[8];
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      a.textContent = m[7];
      parent.append(a);
    } else {
      parent.append(document.createTextNode(m[0]));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

function el(name) {
  return document.createElement(name);
}
