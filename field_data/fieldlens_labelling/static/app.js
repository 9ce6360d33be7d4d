// fieldlens labelling page: one image at a time with the keyboard, or a grid for bulk work.
// Every label goes to POST /api/labels with the revision it was made against; a 409 says
// someone else labelled the image meanwhile, and the page shows what it has now.
"use strict";

const S = {
  state: null, items: [], pos: 0, highlight: 0, history: [], typing: false, touch: false, refreshing: false,
  grid: false, models: false, selected: new Set(), anchor: null, chain: Promise.resolve(),
};

// Actions run one after another, in the order their keys were pressed: Enter, Enter, Enter
// labels three images even when the server answers the first after the third key.
function queue(action) { S.chain = S.chain.then(action).catch((error) => message(String(error), "error")); }
const $ = (id) => document.getElementById(id);

// The session has two halves (security.py): an HttpOnly cookie, which the browser also sends to
// every other server on this host, and this key, which signing in put in the page and which is
// kept in this origin's storage, which browsers keep apart by port. Neither works alone.
const SESSION = "fieldlens-session";
(function signIn() {
  const meta = document.querySelector(`meta[name="${SESSION}"]`);
  if (!meta) return;
  localStorage.setItem(SESSION, meta.content);
  history.replaceState(null, "", "/" + location.hash); // the sign-in token leaves the address bar
})();
const sessionKey = () => localStorage.getItem(SESSION) || "";
const picture = (path) => `${path}?session=${encodeURIComponent(sessionKey())}`;

async function api(path, body) {
  const headers = { "X-Fieldlens-Session": sessionKey() };
  const options = body === undefined ? {} : {
    method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", headers, ...options });
  const data = await response.json();
  return { status: response.status, data };
}

function message(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  clearTimeout(message.timer);
  message.timer = setTimeout(() => { box.className = ""; }, kind === "error" ? 6000 : 2000);
}

async function loadState() {
  const { status, data } = await api("/api/state");
  if (status === 401) { // no session key in this browser's storage (or the page restarted): say how to sign in
    document.body.replaceChildren(data.error);
    throw new Error(data.error);
  }
  S.state = data;
  const order = $("order");
  if (!order.options.length) {
    for (const name of data.orders) order.add(new Option(name.replace("_", " "), name));
    // the order chosen is kept in the address (#order=margin): a reload or a shared link keeps it
    const asked = new URLSearchParams(location.hash.slice(1)).get("order");
    if (data.orders.includes(asked)) order.value = asked;
  }
  $("model").textContent = data.model ? `${data.model.name} ${data.model.version}` : "no model";
  renderProgress();
  if (data.progress.indexing && !loadState.polling) {
    // the server is still reading sidecars: look again, and take the full order once it is done
    loadState.polling = setTimeout(async () => {
      loadState.polling = null;
      await loadState();
      if (!S.state.progress.indexing) await loadItems(current() && current().id);
    }, 2000);
  }
}

async function loadItems(keepId) {
  const show = $("show-all").checked ? "all" : "todo";
  const { status, data } = await api(`/api/items?order=${$("order").value}&show=${show}&limit=1000`);
  if (status !== 200) { message(data.error, "error"); return; }
  S.items = data.items;
  const at = keepId ? S.items.findIndex((item) => item.id === keepId) : -1;
  S.pos = at >= 0 ? at : 0;
  render();
}

function current() { return S.items[S.pos]; }

// An item of the default order may stand for near-duplicates (its stack, not listed themselves):
// a label given to it goes to them too, in the same write, unless "label its near-duplicates" is off.
function withStack(items) {
  if (!$("stack-too").checked) return items;
  const stacked = items.flatMap((i) => (i.stack || []).map((s) => ({ id: s.id, revision: s.revision, label: null, excluded: false })));
  return [...items, ...stacked];
}

function choices() {
  const item = current();
  const text = $("filter").value.trim();
  if (!text) {
    return (item ? item.suggestions : []).slice(0, 9).map((s) => ({ label: s.label, confidence: s.confidence }));
  }
  const lower = text.toLowerCase();
  const labels = [...S.state.labels, S.state.blank_label];
  const starts = labels.filter((l) => l.toLowerCase().startsWith(lower));
  const contains = labels.filter((l) => !l.toLowerCase().startsWith(lower) && l.toLowerCase().includes(lower));
  const found = [...new Set([...starts, ...contains])].slice(0, 50).map((label) => ({ label }));
  if (!labels.includes(text)) found.push({ label: text, isNew: true });
  return found;
}

function render() {
  if (S.models) return;
  $("single").hidden = S.grid;
  $("grid").hidden = !S.grid;
  $("view-toggle").textContent = S.grid ? "one at a time" : "grid";
  if (S.grid) { renderGrid(); return; }
  const item = current();
  const photo = $("photo");
  // nothing to show: a sentence that says why, not an image without a source (a broken-image icon)
  photo.hidden = !item;
  $("empty").hidden = Boolean(item);
  for (const button of document.querySelectorAll("#actions button")) {
    button.disabled = !item && button.dataset.action !== "undo";
  }
  if (!item) {
    photo.removeAttribute("src");
    $("empty").textContent = emptyText();
    $("info").textContent = "";
    $("choices").replaceChildren();
    return;
  }
  photo.src = picture(`/api/images/${encodeURIComponent(item.id)}`);
  const state = item.excluded ? "unusable" : item.label ? `labelled ${item.label}` : "not labelled";
  $("info").textContent =
    `${S.pos + 1} of ${S.items.length} · ${state}\n${item.thing} · ${item.timestamp}\nkept: ${item.reason}`;
  const stack = (item.stack || []).length;
  $("stack-row").hidden = !stack;
  $("stack-text").textContent = `label its ${stack} near-duplicate${stack === 1 ? "" : "s"} with it`;
  const list = choices();
  S.highlight = Math.min(S.highlight, Math.max(0, list.length - 1));
  const rows = list.map((choice, n) => {
    const li = document.createElement("li");
    li.className = (n === S.highlight ? "highlight " : "") + (choice.isNew ? "new" : "");
    const number = document.createElement("span");
    number.className = "n";
    number.textContent = $("filter").value.trim() ? "" : String(n + 1);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = choice.isNew ? `new label: ${choice.label}` : choice.label;
    const confidence = document.createElement("span");
    confidence.textContent = choice.confidence === undefined ? "" : choice.confidence.toFixed(3);
    li.append(number, name, confidence);
    li.addEventListener("click", () => labelItems(withStack([item]), choice.label, false));
    return li;
  });
  $("choices").replaceChildren(...rows);
}

function emptyText() {
  const p = S.state.progress;
  if (!p.total) {
    return p.indexing ? "Reading the field images…" : "No field images here yet: none the devices kept has arrived.";
  }
  if (p.indexing) return "Nothing to label among the images read so far; the rest follow as they are read.";
  return `Nothing left to label: all ${p.total} images are labelled or marked unusable. ` +
    "Tick “show labelled” to go over them again.";
}

function renderProgress() {
  const p = S.state.progress;
  const indexing = p.indexing ? ` · indexing (${p.total} so far)` : p.index_error ? ` · ${p.index_error}` : "";
  $("progress-text").textContent = `${p.labelled} of ${p.total} labelled · ${p.excluded} unusable${indexing}`;
  $("bar-done").style.width = p.total ? `${(100 * (p.labelled + p.excluded)) / p.total}%` : "0";
  const target = p.target_per_class;
  $("weakest").textContent = p.weakest === null ? "No labels yet." : p.weakest_needs > 0
    ? `weakest class: ${p.weakest}, ${p.weakest_needs} more to reach ${target}`
    : `classes balanced: each has ${target} label${target === 1 ? "" : "s"} or more`;
  const u = p.useful;
  const agreed = `the model agreed with ${u.agreed} of ${u.judged} labels so far`;
  const then = u.is === "margin" ? "the smallest margin first" : "a representative sample (margin leads once " +
    `the model agrees with ${Math.round(100 * u.trust_agreement)}% of ${u.trust_after} labels or more)`;
  const e = u.embeddings || {};
  const embedded = e.state === "embedding" ? ` (embedding images: ${e.embedded} done, ${e.pending} to go)` : "";
  $("useful-note").textContent = u.is === "typical"
    ? `Order "useful": typical images first until ${u.typical_until} labels${embedded}, then ${then}; ${agreed}.`
    : `Order "useful": ${then}; ${agreed}; every tenth image is a random one.${embedded}`;
  const most = Math.max(1, ...Object.values(p.per_class));
  const rows = Object.entries(p.per_class).sort((a, b) => b[1] - a[1]).slice(0, 40).map(([label, count]) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = label;
    const number = document.createElement("td");
    number.textContent = String(count);
    const balance = document.createElement("td");
    balance.className = "balance";
    const bar = document.createElement("div");
    bar.style.width = `${(100 * count) / most}%`;
    balance.append(bar);
    tr.append(name, number, balance);
    return tr;
  });
  $("classes").replaceChildren(...rows);
}

async function labelItems(items, label, excluded, fromUndo) {
  const body = { items: items.map((i) => ({ id: i.id, revision: i.revision })), label, excluded };
  const before = items.map((i) => ({ id: i.id, label: i.label, excluded: i.excluded }));
  const { status, data } = await api("/api/labels", body);
  for (const fresh of [...(data.updated || []), ...(data.conflicts || []).map((c) => c.item).filter(Boolean)]) {
    const at = S.items.findIndex((i) => i.id === fresh.id);
    if (at >= 0) S.items[at] = fresh;
  }
  if (status !== 200) {
    message(data.error, "error");
  } else if (!fromUndo) {
    S.history.push(before.map((b) => ({ ...b, revision: data.updated.find((u) => u.id === b.id).revision })));
    message(excluded ? "marked unusable" : label === null ? "label cleared" : `labelled ${label}`, "info");
  }
  await loadState();
  return status === 200;
}

// what the buttons under the choices do: the keys' actions, for a finger on a phone or a tablet
const ACTIONS = {
  previous: () => { S.pos = Math.max(S.pos - 1, 0); render(); },
  next: () => { S.pos = Math.min(S.pos + 1, S.items.length - 1); render(); },
  blank: () => labelCurrent(S.state.blank_label, false),
  unusable: () => labelCurrent(null, true),
  undo: () => undo(),
};

function next() {
  for (let n = S.pos + 1; n < S.items.length; n++) {
    if (!S.items[n].label && !S.items[n].excluded) { S.pos = n; return; }
  }
  S.pos = Math.min(S.pos + 1, S.items.length - 1);
}

async function labelCurrent(label, excluded) {
  const item = current();
  if (!item) return;
  if (await labelItems(withStack([item]), label, excluded)) next();
  resetFilter();
  render();
}

async function undo() {
  const last = S.history.pop();
  if (!last) { message("nothing to undo", "info"); return; }
  for (const b of last) {
    const item = S.items.find((i) => i.id === b.id) || b;  // a stacked near-duplicate is not listed
    await labelItems([{ ...item, revision: b.revision }], b.label, b.excluded, true);
  }
  const at = S.items.findIndex((i) => i.id === last[0].id);
  if (at >= 0) S.pos = at;
  message("undone", "info");
  render();
}

function resetFilter() { $("filter").value = ""; S.typing = false; S.highlight = 0; }

function accept() {
  const choice = choices()[S.highlight];
  return choice && labelCurrent(choice.label, false);
}

function onSingleKey(event) {
  const text = $("filter").value;
  // a soft keyboard types into the filter: its b is the start of a label, not "blank"
  const commands = !text && !S.typing && !(S.touch && event.target === $("filter"));
  if (event.key === "Enter") { event.preventDefault(); queue(accept); return; }
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const size = choices().length;
    S.highlight = (S.highlight + (event.key === "ArrowDown" ? 1 : size - 1)) % Math.max(1, size);
    render();
    return;
  }
  if (event.key === "Escape") { resetFilter(); render(); return; }
  if (!commands) return; // the key types into the filter
  if (event.key === "ArrowRight") { ACTIONS.next(); return; }
  if (event.key === "ArrowLeft") { ACTIONS.previous(); return; }
  if (/^[1-9]$/.test(event.key)) {
    event.preventDefault();
    const n = Number(event.key) - 1;
    queue(() => { const choice = choices()[n]; return choice && labelCurrent(choice.label, false); });
    return;
  }
  const action = {
    b: ACTIONS.blank, x: ACTIONS.unusable, u: ACTIONS.undo, Backspace: ACTIONS.undo, g: toggleGrid, m: toggleModels,
    "/": () => { S.typing = true; },
  }[event.key];
  if (action) { event.preventDefault(); queue(action); }
}

function toggleGrid() {
  S.grid = !S.grid;
  S.selected.clear();
  render();
  (S.grid ? $("grid-label") : $("filter")).focus();
}

function renderGrid() {
  const shown = S.items.slice(0, 300);
  if (!shown.length) {
    const none = document.createElement("p");
    none.className = "empty";
    none.textContent = emptyText();
    $("thumbs").replaceChildren(none);
    $("selection-count").textContent = "";
    return;
  }
  const cells = shown.map((item, n) => {
    const cell = document.createElement("div");
    cell.className = "thumb" + (S.selected.has(item.id) ? " selected" : "") +
      (item.label || item.excluded ? " done" : "");
    cell.dataset.id = item.id;
    const img = document.createElement("img");
    img.src = picture(`/api/thumbnails/${encodeURIComponent(item.id)}`);
    img.alt = item.id;
    const caption = document.createElement("span");
    caption.textContent = (item.excluded ? "unusable" : item.label || item.prediction || "") +
      (item.stack && item.stack.length ? ` ×${item.stack.length + 1}` : "");
    cell.append(img, caption);
    cell.addEventListener("click", (event) => select(n, event));
    return cell;
  });
  $("thumbs").replaceChildren(...cells);
  $("selection-count").textContent = `${S.selected.size} selected`;
}

function select(n, event) {
  const id = S.items[n].id;
  if (event.shiftKey && S.anchor !== null) {
    const [from, to] = [Math.min(S.anchor, n), Math.max(S.anchor, n)];
    for (let k = from; k <= to; k++) S.selected.add(S.items[k].id);
  } else if (event.ctrlKey || event.metaKey) {
    if (S.selected.has(id)) S.selected.delete(id); else S.selected.add(id);
    S.anchor = n;
  } else {
    S.selected = new Set([id]);
    S.anchor = n;
  }
  renderGrid();
  $("grid-label").focus();
}

function gridLabel(text) {
  const labels = [...S.state.labels, S.state.blank_label];
  if (labels.includes(text)) return text;
  const lower = text.toLowerCase();
  const found = labels.find((l) => l.toLowerCase().startsWith(lower)) || labels.find((l) => l.toLowerCase().includes(lower));
  if (found) return found;
  return text;  // a new class: the next retrain learns it
}

async function labelSelection(label, excluded) {
  const items = S.items.filter((i) => S.selected.has(i.id));
  if (!items.length) { message("select images first", "error"); return; }
  if (await labelItems(withStack(items), label, excluded)) S.selected.clear();
  $("grid-label").value = "";
  renderGrid();
}

function onGridKey(event) {
  const text = $("grid-label").value.trim();
  if (event.key === "Enter" && text) {
    event.preventDefault();
    const label = gridLabel(text);
    if (label === null) { message(`${text} is not a label`, "error"); return; }
    queue(() => labelSelection(label, false));
    return;
  }
  if (event.key === "Escape") { S.selected.clear(); $("grid-label").value = ""; renderGrid(); return; }
  if (text) return;
  const action = {
    b: () => labelSelection(S.state.blank_label, false),
    x: () => labelSelection(null, true),
    u: async () => { await undo(); renderGrid(); },
    g: toggleGrid,
  }[event.key];
  if (action) { event.preventDefault(); queue(action); }
}

// -- the model desk: gate reports, Retrain with its progress, Install -------------------------
async function toggleModels() {
  S.models = !S.models;
  $("models").hidden = !S.models;
  $("single").hidden = S.models || S.grid;
  $("grid").hidden = S.models || !S.grid;
  $("models-toggle").textContent = S.models ? "label" : "model";
  if (S.models) await loadModels(); else render();
}

async function loadModels() {
  const { status, data } = await api("/api/models");
  if (status !== 200) { message(data.error, "error"); return; }
  $("current-model").textContent = data.current ? `serving ${data.current.name} ${data.current.version}` : "no model";
  if (data.current) $("model").textContent = `${data.current.name} ${data.current.version}`;  // after an Install
  const r = data.retrain;
  $("retrain").disabled = r.state === "running";
  const stage = r.state === "running" && r.stage ? ": " + r.stage : "";  // the last stage once done reads as still going
  $("retrain-status").textContent = r.state === "idle" ? "" : `${r.state}${stage} (${r.elapsed_s} s) ${r.message || ""}`;
  const none = document.createElement("p");
  none.textContent = "No gate reports yet: label some images, then Retrain.";
  $("reports").replaceChildren(...(data.reports.length ? data.reports.map((r) => renderReport(r, data.current)) : [none]));
  renderConflicts(r.conflicts || []);
  renderDecisions(data.decisions || []);
  if (r.state === "running") setTimeout(loadModels, 1000);
}

function renderConflicts(conflicts) {
  // identical photos given different labels: left out of training until a person relabels them
  const list = $("conflicts");
  list.hidden = !conflicts.length;
  list.replaceChildren(...conflicts.map((c) => {
    const item = document.createElement("li");
    item.textContent = `left out, the same photo labelled ${c.labels.join(" and ")}: ${c.keys.join(", ")}`;
    return item;
  }));
}

function renderDecisions(decisions) {
  $("decisions").replaceChildren(...decisions.map((d) => {
    const item = document.createElement("li");
    const on = d.evaluated_on ? ` on ${d.evaluated_on.images} images (set ${d.evaluated_on.set})` : "";
    const forced = d.forced ? ", forced" : "";
    item.textContent = `${d.time} ${d.candidate} vs ${d.current || "none"}${on}: ${d.verdict}${forced}. ${d.sentence || ""}`;
    return item;
  }));
}

function cell(row, text, tag = "td") {
  const element = document.createElement(tag);
  element.textContent = text;
  row.append(element);
}

function renderReport(report, current) {
  const box = document.createElement("div");
  box.className = "report";
  const title = document.createElement("h3");
  const before = report.current ? `${(100 * report.current.accuracy).toFixed(1)}%` : "n/a";
  const on = report.evaluated_on ? ` on ${report.evaluated_on.images} images (set ${report.evaluated_on.set})` : "";
  title.textContent = `${report.version}: ${(100 * report.candidate.accuracy).toFixed(1)}% vs current model ${before}${on}`;
  const reason = document.createElement("p");
  reason.textContent = report.reason;
  const said = [report.sentence, report.learning_curve && report.learning_curve.sentence, ...(report.dataset_notes || [])];
  if (!report.comparable) said.unshift("Not comparable with the other reports: they were scored on other images.");
  if (report.published && report.validated === false) said.unshift("Published unvalidated (forced).");
  const notes = said.filter(Boolean).map((text) => { const p = document.createElement("p"); p.className = "note"; p.textContent = text; return p; });
  const table = document.createElement("table");
  const head = document.createElement("tr");
  ["class", "precision", "recall", "images"].forEach((name) => cell(head, name, "th"));
  table.append(head);
  for (const [label, m] of Object.entries(report.candidate.per_class)) {
    const row = document.createElement("tr");
    [label, m.precision.toFixed(2), m.recall.toFixed(2), String(m.support)].forEach((t) => cell(row, t));
    table.append(row);
  }
  box.append(title, reason, ...notes, table);
  for (const name of report.pictures) {
    const img = document.createElement("img");
    img.src = picture(`/api/reports/${report.version}/${name}`);
    img.alt = name;
    box.append(img);
  }
  if (report.installable && !(current && current.version === report.version)) {
    const button = document.createElement("button");
    button.textContent = `Install ${report.version}`;
    button.addEventListener("click", async () => {
      const { status, data } = await api("/api/install", { version: report.version });
      message(status === 200 ? `installed ${data.installed.version}: the service reloads it` : data.error,
        status === 200 ? "info" : "error");
      await loadModels();
    });
    box.append(button);
  }
  return box;
}

async function retrain() {
  const { status, data } = await api("/api/retrain", {});
  if (status !== 202) message(data.error, "error");
  await loadModels();
}

// Another writer (`fieldlens label import`, a second page) may have labelled images meanwhile: coming
// back to the page shows the directory as it is now (the server looks again on each request).
async function refreshView() {
  if (!S.state) return;
  await loadState();
  if (!S.models) await loadItems(current() && current().id);
}

// a tab coming back fires focus and visibilitychange both: one look does for the two
function refreshSoon() {
  if (S.refreshing) return;
  S.refreshing = true;
  queue(() => { S.refreshing = false; return refreshView(); });
}

document.addEventListener("keydown", (event) => {
  if (!S.state || event.target === $("order")) return;
  // a focused button takes Enter and Space itself (a click): not "accept" as well
  if (event.target instanceof HTMLButtonElement && (event.key === "Enter" || event.key === " ")) return;
  if (S.models) { if (event.key === "m") toggleModels(); return; }
  if (S.grid) onGridKey(event); else onSingleKey(event);
});
document.addEventListener("DOMContentLoaded", async () => {
  $("filter").addEventListener("input", () => { S.highlight = 0; render(); });
  $("order").addEventListener("change", () => {
    history.replaceState(null, "", `#order=${$("order").value}`);
    loadItems();
  });
  $("show-all").addEventListener("change", () => loadItems(current() && current().id));
  $("view-toggle").addEventListener("click", toggleGrid);
  $("models-toggle").addEventListener("click", toggleModels);
  $("retrain").addEventListener("click", retrain);
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => queue(ACTIONS[button.dataset.action]));
  }
  document.addEventListener("pointerdown", (event) => { S.touch = event.pointerType !== "mouse"; }, true);
  window.addEventListener("focus", refreshSoon);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshSoon(); });
  await loadState();
  await loadItems();
  $("filter").focus();
  document.body.dataset.ready = "true"; // the browser tests wait for this
});
