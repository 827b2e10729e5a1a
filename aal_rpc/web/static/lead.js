// The lead's page: the job's figures (POST /api/lead, what `aal-admin stats --json` prints), polled every few
// seconds with the admin token typed in (kept in memory only). The accuracy curve is drawn as inline SVG.
"use strict";

const POLL_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const ORIGIN_WORDS = {
  model: "chosen by a model", cold_start: "at random, before any model (cold start)",
  typical: "typical items, before any model (cold start)", random_strategy: "by the random strategy",
  audit: "audit: at random, for the accuracy estimate", imported: "imported with the data",
  gold: "gold items: known answers, and labels of them",
};
let token = "";
let timer = null;

const $ = (id) => document.getElementById(id);

function text(value, digits) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" && digits !== undefined ? value.toFixed(digits) : String(value);
}

function put(id, value, digits) {
  const el = $(id);
  el.textContent = text(value, digits);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
}

function percent(share) {
  return share === null || share === undefined ? "–" : `${Math.round(100 * share)}%`;
}

function age(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function row(tbody, cells, data) {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(data || {})) tr.dataset[key] = value;
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

function svg(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function drawCurve(curve) {
  const box = $("curve");
  box.replaceChildren();
  const W = 900, H = 300, L = 48, R = 16, T = 12, B = 34;
  const root = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                           "aria-label": "accuracy against labels"}, box);
  const points = curve.filter((p) => p.estimated || p.accuracy !== null);
  root.dataset.points = String(points.length);
  if (!points.length) {
    svg("text", {x: L, y: H / 2}, root).textContent = "No model with an accuracy yet.";
    return;
  }
  const maxLabels = Math.max(...points.map((p) => p.labels));
  const lows = points.flatMap((p) => [p.estimated ? p.estimated.low : 1, p.accuracy ?? 1]);
  const yMin = Math.max(0, Math.floor(Math.min(...lows) * 10) / 10);
  const x = (labels) => L + (W - L - R) * labels / maxLabels;
  const y = (acc) => T + (H - T - B) * (1 - (acc - yMin) / (1 - yMin || 1));
  for (let a = yMin; a <= 1.0001; a += 0.1) {
    svg("line", {class: "grid", x1: L, x2: W - R, y1: y(a), y2: y(a)}, root);
    svg("text", {x: 6, y: y(a) + 4}, root).textContent = a.toFixed(1);
  }
  svg("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}, root);
  svg("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}, root);
  for (let i = 0; i <= 4; i++) {
    const labels = Math.round(maxLabels * i / 4);
    svg("text", {x: x(labels) - 10, y: H - B + 16}, root).textContent = String(labels);
  }
  svg("text", {x: W / 2 - 20, y: H - 4}, root).textContent = "labels";
  const est = points.filter((p) => p.estimated);
  if (est.length) {
    const upper = est.map((p) => `${x(p.labels)},${y(p.estimated.high)}`);
    const lower = est.slice().reverse().map((p) => `${x(p.labels)},${y(p.estimated.low)}`);
    svg("polygon", {class: "band", points: upper.concat(lower).join(" ")}, root);
    svg("polyline", {class: "estimated", points: est.map((p) => `${x(p.labels)},${y(p.estimated.value)}`).join(" ")},
        root);
    for (const p of est) {
      const dot = svg("circle", {class: "dot-estimated", cx: x(p.labels), cy: y(p.estimated.value), r: 3}, root);
      svg("title", {}, dot).textContent =
        `v${p.version}, ${p.labels} labels: ${p.estimated.value.toFixed(3)} ` +
        `[${p.estimated.low.toFixed(3)}, ${p.estimated.high.toFixed(3)}]`;
    }
  }
  const held = points.filter((p) => p.accuracy !== null);
  if (held.length) {
    svg("polyline", {class: "held-out", points: held.map((p) => `${x(p.labels)},${y(p.accuracy)}`).join(" ")}, root);
    for (const p of held) {
      const dot = svg("circle", {class: "dot-held-out", cx: x(p.labels), cy: y(p.accuracy), r: 2.5}, root);
      svg("title", {}, dot).textContent = `v${p.version}, ${p.labels} labels: held out ${p.accuracy.toFixed(3)}`;
    }
  }
  const legend = [[est.length, "dot-estimated", "estimated (audit), 95% interval shaded"],
                  [held.length, "dot-held-out", "held out (test set)"]].filter((l) => l[0]);
  legend.forEach(([, cls, words], i) => {
    svg("circle", {class: cls, cx: L + 16, cy: T + 12 + 16 * i, r: 4}, root);
    svg("text", {x: L + 26, y: T + 16 + 16 * i}, root).textContent = words;
  });
}

function show(d) {
  const stop = d.stopping;
  $("stopping").className = `banner ${stop.suggested ? "stop" : "go"}`;
  $("stopping").dataset.suggested = String(stop.suggested);
  $("stopping-verdict").textContent = stop.suggested ? "Stopping suggested." : "Keep going.";
  // the verdict is shown apart: the reason without its "keep going: " or "stopping suggested: "
  $("stopping-reason").textContent = stop.reason.replace(/^(keep going|stopping suggested): /, "");
  put("labeled", d.labeled);
  put("queued", d.queued);
  put("leased", d.leased);
  put("skipped", d.skipped);
  put("remaining", d.remaining);
  put("pool", d.pool_items);
  put("rate", d.label_rate_per_minute, 1);
  drawCurve(d.curve);
  const est = d.estimated_accuracy;
  $("accuracy-now").textContent = (est ? `The newest model: ${est.value.toFixed(3)} estimated ` +
    `[${est.low.toFixed(3)}, ${est.high.toFixed(3)}] on ${est.labels} audit labels` : "No audit labels yet") +
    (d.held_out_accuracy !== null ? `; ${d.held_out_accuracy.toFixed(3)} held out.` : ".");
  const share = $("model-share");
  share.textContent = percent(d.chosen_by_model_share);
  share.dataset.value = d.chosen_by_model_share === null ? "" : String(d.chosen_by_model_share);
  const origins = $("origins").tBodies[0];
  origins.replaceChildren();
  for (const [key, words] of Object.entries(ORIGIN_WORDS)) {
    const n = d.label_origins[key];
    if (n) row(origins, [words, String(n)], {origin: key, count: n});
  }
  const people = $("annotators").tBodies[0];
  people.replaceChildren();
  const names = Object.keys(d.annotators).sort((a, b) => d.annotators[b].labels - d.annotators[a].labels);
  for (const name of names) {
    const a = d.annotators[name];
    const q = d.crowd.annotators[name] || {agreement: null, quality: null};
    row(people, [name, String(a.labels), text(d.pace_per_minute[name], 1), String(a.skips), String(a.defers),
                 text(q.agreement, 2), text(q.quality, 2)],
        {annotator: name, labels: a.labels, skips: a.skips, defers: a.defers, quality: q.quality ?? ""});
  }
  const models = $("models").tBodies[0];
  models.replaceChildren();
  for (const m of d.recent_models) {
    row(models, [`v${m.version}${m.encoder ? " (encoder)" : ""}`, m.server_id, String(m.labels),
                 String(m.labels_behind), age(m.age_seconds), m.estimated ? m.estimated.value.toFixed(3) : "–",
                 text(m.accuracy, 3)], {version: m.version, labelsBehind: m.labels_behind});
  }
  $("updated").textContent = `updated ${new Date(d.generated_at * 1000).toLocaleTimeString()}`;
}

async function poll() {
  clearTimeout(timer);
  let response;
  try {
    response = await fetch("/api/lead", {method: "POST", headers: {"content-type": "application/json"},
                                          body: JSON.stringify({token})});
  } catch (err) {
    $("updated").textContent = "aal-web cannot be reached; trying again";
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (response.status === 401 || response.status === 403 || response.status === 429 || response.status === 400) {
    $("job").hidden = true;
    $("login").hidden = false;
    $("error").textContent = body.error;
    return;
  }
  if (!response.ok) {
    $("updated").textContent = `${body.error}; trying again`;
  } else {
    $("error").textContent = "";
    $("login").hidden = true;
    $("job").hidden = false;
    show(body);
  }
  timer = setTimeout(poll, POLL_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  poll();
});
