// The review page: a playground against the proxy's own API, the audit log's recent rows, or (when the
// page carries its rows in a <script type="application/json" id="review-data">) a static batch report.
// Plain JavaScript with no build step and nothing fetched from elsewhere, so the proxy serves it as a
// file and the report is one self-contained HTML file. Every text from data is set with textContent
// (never innerHTML), so a question containing markup shows as text.
"use strict";

const MAX_DIFF_CELLS = 4000000; // tokens(a) x tokens(b) above which the diff marks the whole middle changed

// A word-level diff: the longest common subsequence of the two texts' words. Each word carries the
// whitespace after it, compared on the word alone (so the many shared spaces cannot outweigh a shared
// word) and shown with each side's own spacing. Written here rather than taken from a library because
// the page has no build step and loads nothing from elsewhere; the common prefix and suffix are cut
// first, so a typical correction (a changed sentence) stays small.
// Returns [{op: "same" | "del" | "ins", a: text in the original, b: text in the final}].
function words(text) {
  const tokens = [{ word: "", text: text.match(/^\s*/)[0] }];
  for (const match of text.matchAll(/(\S+)(\s*)/g)) tokens.push({ word: match[1], text: match[0] });
  return tokens;
}

function wordDiff(a, b) {
  const x = words(a);
  const y = words(b);
  let start = 0;
  while (start < x.length && start < y.length && x[start].word === y[start].word) start++;
  let endX = x.length;
  let endY = y.length;
  while (endX > start && endY > start && x[endX - 1].word === y[endY - 1].word) {
    endX--;
    endY--;
  }
  const ops = [];
  const push = (op, left, right) => {
    const last = ops[ops.length - 1];
    if (last && last.op === op) {
      last.a += left;
      last.b += right;
    } else ops.push({ op, a: left, b: right });
  };
  const same = (i, j) => push("same", x[i].text, y[j].text);
  for (let i = 0; i < start; i++) same(i, i);
  const n = endX - start;
  const m = endY - start;
  if (n * m > MAX_DIFF_CELLS) {
    for (let i = start; i < endX; i++) push("del", x[i].text, "");
    for (let j = start; j < endY; j++) push("ins", "", y[j].text);
  } else {
    // lcs[i * w + j]: the LCS length of the middles' suffixes from i and j, in one flat array.
    const w = m + 1;
    const lcs = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * w + j] =
          x[start + i].word === y[start + j].word
            ? lcs[(i + 1) * w + j + 1] + 1
            : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (x[start + i].word === y[start + j].word) same(start + i++, start + j++);
      else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) push("del", x[start + i++].text, "");
      else push("ins", "", y[start + j++].text);
    }
    while (i < n) push("del", x[start + i++].text, "");
    while (j < m) push("ins", "", y[start + j++].text);
  }
  for (let k = 0; k < x.length - endX; k++) same(endX + k, endY + k);
  return ops;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function cost(value) {
  return typeof value === "number" ? value.toFixed(2) : "-";
}

// One side of the diff: the original keeps what was deleted, the final what was inserted.
function side(title, ops, keep) {
  const box = el("div", "side");
  box.appendChild(el("h3", null, title));
  const mine = keep === "del" ? "a" : "b";
  for (const op of ops) {
    if (op.op === "same") box.appendChild(document.createTextNode(op[mine]));
    else if (op.op === keep) box.appendChild(el("span", "diff-" + keep, op[mine]));
  }
  return box;
}

// A row: {question, original, final, status, cost_before, cost_after, and optionally id, time, model,
// request_id, total_ms, error}: an audit-log row, a batch output row, or a playground answer.
function rowView(row) {
  const view = el("div", "row");
  const meta = el("div", "meta");
  const status = el("span", "status", row.status || "?");
  status.dataset.status = row.status || "";
  meta.appendChild(status);
  if (typeof row.time === "number") meta.appendChild(el("span", null, new Date(row.time * 1000).toLocaleString()));
  if (row.id !== undefined && row.id !== null) meta.appendChild(el("span", null, "#" + row.id));
  if (row.model) meta.appendChild(el("span", null, row.model));
  const after = typeof row.cost_after === "number" ? " \u2192 " + cost(row.cost_after) : "";
  meta.appendChild(el("span", "costs", "cost " + cost(row.cost_before) + after));
  if (typeof row.threshold === "number") meta.appendChild(el("span", null, "threshold " + cost(row.threshold)));
  if (typeof row.total_ms === "number") meta.appendChild(el("span", null, row.total_ms.toFixed(0) + " ms"));
  if (row.request_id) meta.appendChild(el("span", null, row.request_id));
  view.appendChild(meta);
  view.appendChild(el("div", "question", row.question || ""));
  const ops = wordDiff(row.original || "", row.final || "");
  const sides = el("div", "sides");
  sides.appendChild(side("upstream answer", ops, "del"));
  sides.appendChild(side("final answer", ops, "ins"));
  view.appendChild(sides);
  if (row.error) view.appendChild(el("div", "error", row.error));
  return view;
}

function showRows(rows, note) {
  const box = document.getElementById("rows");
  box.replaceChildren(...rows.map(rowView));
  document.getElementById("log-note").textContent = note;
}

function say(text) {
  document.getElementById("message").textContent = text || "";
}

// -- the static report: rows embedded in the page

function startReport(data) {
  document.getElementById("playground").remove();
  document.getElementById("key-label").remove();
  document.getElementById("refresh").remove();
  document.getElementById("title").textContent = "aligner-proxy review: " + (data.title || "batch output");
  document.title = "review: " + (data.title || "batch output");
  document.getElementById("log-title").textContent = "Rows";
  const filter = document.getElementById("status-filter");
  const render = () => {
    const shown = filter.value ? data.rows.filter((r) => r.status === filter.value) : data.rows;
    showRows(shown, shown.length + " of " + data.rows.length + " rows");
  };
  filter.addEventListener("change", render);
  render();
}

// -- the live page: the proxy's own API

function headers() {
  const key = document.getElementById("api-key").value;
  const result = { "content-type": "application/json" };
  if (key) result.authorization = "Bearer " + key;
  return result;
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return data;
}

async function loadModels() {
  const select = document.getElementById("pg-model");
  const models = await api("/v1/models");
  select.replaceChildren(...models.data.map((m) => el("option", null, m.id)));
}

async function loadLog() {
  const status = document.getElementById("status-filter").value;
  const query = "?limit=100" + (status ? "&status=" + encodeURIComponent(status) : "");
  const data = await api("/ui/api/audit" + query);
  if (!data.enabled) {
    showRows([], "the audit log is off (set ALIGNER_AUDIT_LOG to keep one)");
    return;
  }
  showRows(data.rows, data.rows.length + " rows, newest first");
}

async function check(event) {
  event.preventDefault();
  const question = document.getElementById("pg-question").value;
  const result = document.getElementById("pg-result");
  const button = document.getElementById("pg-send");
  button.disabled = true;
  result.replaceChildren(el("p", "meta", "waiting for the answer..."));
  try {
    const answer = await api("/v1/chat/completions", {
      model: document.getElementById("pg-model").value,
      messages: [{ role: "user", content: question }],
      aligner: { mode: document.getElementById("pg-mode").value, return_original: true },
    });
    const aligner = answer.aligner || {};
    const final = answer.choices[0].message.content || "";
    const timings = aligner.timings || {};
    result.replaceChildren(
      rowView({
        question,
        original: aligner.original === null || aligner.original === undefined ? final : aligner.original,
        final,
        status: aligner.status,
        cost_before: aligner.cost_before,
        cost_after: aligner.cost_after,
        threshold: aligner.threshold,
        total_ms: timings.total_ms,
        model: document.getElementById("pg-model").value,
      }),
    );
    const parts = ["upstream", "scorer", "corrector"].map((s) => s + " " + (timings[s + "_ms"] || 0).toFixed(0) + " ms");
    result.appendChild(el("p", "meta timings", parts.join(", ")));
    say("");
    loadLog().catch((error) => say(error.message));
  } catch (error) {
    result.replaceChildren();
    say(error.message);
  } finally {
    button.disabled = false;
  }
}

function startLive() {
  document.querySelector('#status-filter option[value="failed"]').remove(); // a batch row's status only
  const key = document.getElementById("api-key");
  key.value = sessionStorage.getItem("aligner-proxy-key") || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem("aligner-proxy-key", key.value);
    loadModels().then(loadLog).catch((error) => say(error.message));
  });
  document.getElementById("pg-form").addEventListener("submit", check);
  document.getElementById("refresh").addEventListener("click", () => loadLog().catch((error) => say(error.message)));
  document.getElementById("status-filter").addEventListener("change", () => loadLog().catch((e) => say(e.message)));
  loadModels()
    .then(loadLog)
    .catch((error) => say(error.message));
}

const embedded = document.getElementById("review-data");
if (embedded) startReport(JSON.parse(embedded.textContent));
else startLive();
