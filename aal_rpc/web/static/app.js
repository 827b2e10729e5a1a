"use strict";
/* aal-web's page: one item at a time, one key per class.

   The page holds two leases: the item on screen and the next one, leased in the background with its image
   already decoded, so a key press shows the next item at once; the label goes to the server meanwhile and is
   counted when the coordinator has it on disk. While open, the page renews its leases (heartbeat); when it
   closes it gives them back (pagehide + sendBeacon); if it vanishes without a word, aal-web and then the
   coordinator's lease expiry return its items to the pool.

   The page never learns an item's id (an id such as "cat_0042.jpg" may give the answer away): it knows each item
   by the lease it came with, and corrections name that lease. */

const UNDO_DEPTH = 20; // labels of this page that Undo reaches back over
const LONG_POLL_SECONDS = 10; // the longest wait aal-web allows a lease request (aal_rpc/web/app.py)
const MAX_BACKOFF_MS = 10000;
const STAGE_MARGIN = 16; // px kept free around an image
const TINY = 128; // px: a picture whose longer side is shorter (digits, CIFAR) is enlarged by whole factors
const SEND_AFTER_MS = 100; // a key's request goes out after the next frame is drawn, or after this long at most
const SKIP_UNDO_MS = 5000; // a skip waits this long before it is sent (it is permanent), so that U can take it back
const FIND_FROM = 11; // classes from which the page offers a find box: keys 1–9, 0 reach only the first ten

const $ = (id) => document.getElementById(id);

const state = {
  session: sessionStorage.getItem("aal.session"), // a login, kept across reloads of this tab
  tab: null, // this page's registration with aal-web: its leases are held under it
  generation: 0, // bumps whenever the page re-registers; answers for an older registration are dropped
  classes: [],
  keys: new Map(), // key -> class index
  current: null, // the item on screen
  next: null, // the item shown on the next key press: leased, its image decoded
  filling: false,
  history: [], // this page's labels, newest last: {item, label, ack}; an item is known by its lease
  correcting: null, // index into history while an earlier label is being changed
  pendingSince: null, // when a key was pressed whose next item is not on screen yet
  heartbeat: null,
  unsent: new Map(), // lease -> the label or give-back a key set off, until its request goes out
  later: [], // items taken back from a skip, shown before `next`
  skips: [], // skips not sent yet, newest last: {item, session, tab, order, timer}; U takes the newest back
  order: 0, // counts labels and skips, so that U undoes whichever came last
  marked: null, // the class Enter in the find box labels with
};

const skipUndoMs = () => window.aalSkipUndoMs ?? SKIP_UNDO_MS; // a test may lengthen the window

// Key press (or click) -> the next item on screen, in ms, measured to the frame that shows it; and key press ->
// the label on the coordinator's disk. benchmarks/web_latency.py reads both.
window.aalLatencies = [];
window.aalAckLatencies = [];
window.aalNotReady = 0; // key presses that found the next item still on its way

class ApiError extends Error {
  constructor(status, message, expired) {
    super(message);
    this.status = status;
    this.expired = expired || "";
  }
}

async function api(path, body) {
  let response;
  try {
    response = await fetch("/api/" + path, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "aal-web cannot be reached");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new ApiError(response.status, data.error || response.statusText, data.expired);
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- login ----------------------------------------------------------------------------------------------

function showLogin(message) {
  leave(); // this page's leases go back now, not when aal-web finds the page silent
  state.session = null;
  state.tab = null;
  state.generation++;
  sessionStorage.removeItem("aal.session");
  clearInterval(state.heartbeat);
  $("desk").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("stats").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const r = await api("login", {token: $("token").value, name: $("name").value});
    $("token").value = "";
    state.session = r.session;
    sessionStorage.setItem("aal.session", r.session);
    await openTab();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  const session = state.session;
  showLogin("");
  await api("logout", {session}).catch(() => {});
});

// An error that ends the login or this page's registration; true when handled here. `tab`: the registration
// the failed request was made under, when it may be an older one than the page's now. A refusal of one action
// (403: a correction the coordinator does not allow, say) ends nothing: its caller shows it and the page goes on.
function handleExpired(err, tab) {
  if (err.expired === "tab") {
    if (tab && tab !== state.tab) return false;
    openTab();
    return true;
  }
  if (err.expired === "session" || err.status === 401) {
    showLogin(err.expired ? "Your login has ended; please log in again." : err.message);
    return true;
  }
  return false;
}

// -- the desk -------------------------------------------------------------------------------------------

async function openTab() {
  const generation = ++state.generation;
  state.tab = null;
  state.current = state.next = null;
  state.later = [];
  dropSkips(); // their leases went with the old registration
  state.correcting = null;
  let r;
  for (let backoff = 500; ; backoff = Math.min(2 * backoff, MAX_BACKOFF_MS)) {
    try {
      r = await api("tab", {session: state.session});
      break;
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status !== 0 && handleExpired(err)) return;
      setStatus(err.message + "; retrying");
      await sleep(backoff);
    }
  }
  if (generation !== state.generation) return;
  state.tab = r.tab;
  state.classes = r.class_names;
  state.descriptions = r.class_descriptions || [];
  state.keys = new Map(r.class_keys.map((key, i) => [key, i]).filter(([key]) => key)); // web/guidelines.py
  showGuidelines(r.guidelines);
  buildButtons();
  buildFind();
  $("who").textContent = r.annotator;
  showStats(r.stats);
  $("login").hidden = true;
  $("desk").hidden = false;
  $("logout").hidden = false;
  setStatus("");
  clearInterval(state.heartbeat);
  state.heartbeat = setInterval(heartbeat, r.heartbeat_seconds * 1000);
  render();
  fill();
}

function buildButtons() {
  const keyOf = new Map([...state.keys].map(([key, i]) => [i, key]));
  const buttons = state.classes.map((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "class";
    b.dataset.class = String(i);
    const label = document.createElement("span");
    label.className = "name";
    label.append(name);
    if (keyOf.has(i) && keyOf.get(i) !== name) {
      const kbd = document.createElement("kbd");
      kbd.textContent = keyOf.get(i);
      label.append(" ", kbd);
    }
    b.append(label);
    const description = state.descriptions[i] || "";
    if (description) {
      const small = document.createElement("small");
      small.className = "desc";
      small.textContent = description; // text, never HTML
      b.append(small);
      b.title = description;
    }
    b.addEventListener("click", (event) => {
      b.blur(); // Enter or Space must not label the next item with this class again
      choose(i, event.timeStamp);
    });
    return b;
  });
  $("classes").replaceChildren(...buttons);
  const keys = [...state.keys.keys()];
  const n = keys.length;
  const byName = n && keys.every((k, i) => k === state.classes[i]);
  let labelKeys = "";
  if (n) labelKeys = byName ? `${keys[0]}–${keys[n - 1]} label` : n === 10 ? "1–9, 0 label" : `1–${n} label`;
  const guide = $("guidelines").hidden ? "" : " · G guidelines";
  const find = state.classes.length >= FIND_FROM ? "/ find a class · " : "";
  $("keys").textContent =
    `Keys: ${labelKeys ? labelKeys + " · " : ""}${find}Del skip · D don't know · U undo · Esc cancel${guide}`;
}

// The task's guidelines, as aal-web rendered them from Markdown (raw HTML escaped there: aal_rpc/web/guidelines.py).
// Open on a tab's first load; folded or not, the choice holds across reloads of the tab.
function showGuidelines(html) {
  const panel = $("guidelines");
  panel.hidden = !html;
  $("guidelines-body").innerHTML = html || "";
  panel.open = sessionStorage.getItem("aal.guidelines") !== "folded";
}

$("guidelines").addEventListener("toggle", () => {
  sessionStorage.setItem("aal.guidelines", $("guidelines").open ? "open" : "folded");
  const el = $("stage").firstElementChild;
  if (el) fit(el); // the stage widens or narrows with the panel
});

// The session's labels and pace, the person's labels today (all their pages), and the team's progress when aal-web
// can read it.
function showStats(stats) {
  const el = $("stats");
  const today = stats.today || 0;
  el.dataset.labels = String(stats.labels);
  el.dataset.corrections = String(stats.corrections);
  el.dataset.today = String(today);
  const changed = stats.corrections ? ` · ${stats.corrections} changed` : "";
  el.textContent = `${stats.labels} label${stats.labels === 1 ? "" : "s"}${changed} · ${today} today · ` +
    `${stats.per_minute} / min`;
  const team = $("team");
  team.hidden = !stats.team;
  if (stats.team) {
    team.dataset.labeled = String(stats.team.labeled);
    team.dataset.waiting = String(stats.team.waiting);
    team.textContent = `Team: ${stats.team.labeled} labeled · ${stats.team.waiting} waiting`;
  }
}

// `about`: the lease of the item the message is about, so that a later success for it clears the message
function setStatus(message, about) {
  $("status").textContent = message;
  $("status").dataset.about = about || "";
}

let flashTimer = null;
function flash(message, ms = 2500) {
  $("banner").textContent = message;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    if (state.correcting === null) $("banner").textContent = "";
  }, ms);
}

// -- finding a class among many -------------------------------------------------------------------------
// With more classes than keys, a find box: / goes to it, typing narrows the buttons to the classes whose name (or
// description) holds the text, names that start with it first; arrows move among them, Enter labels with the one
// marked, Esc leaves. The box keeps the focus after a label, for the next item's class.

function buildFind() {
  $("find").hidden = state.classes.length < FIND_FROM;
  $("filter").value = "";
  narrow();
}

// The classes matching the box, best first: names starting with the text, then names holding it, then descriptions.
function matches() {
  const text = $("filter").value.trim().toLowerCase();
  const ranked = [];
  state.classes.forEach((name, i) => {
    const n = name.toLowerCase();
    const rank = !text || n.startsWith(text) ? 0 : n.includes(text) ? 1
      : (state.descriptions[i] || "").toLowerCase().includes(text) ? 2 : -1;
    if (rank >= 0) ranked.push([rank, i]);
  });
  return ranked.sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, i]) => i);
}

function narrow(moveBy = 0) {
  const found = matches();
  const filtering = !$("find").hidden && $("filter").value.trim() !== "";
  let at = found.indexOf(state.marked);
  at = at < 0 ? 0 : Math.min(found.length - 1, Math.max(0, at + moveBy));
  state.marked = filtering && found.length ? found[at] : null;
  const shown = new Set(found);
  for (const b of $("classes").children) {
    const i = Number(b.dataset.class);
    b.hidden = filtering && !shown.has(i);
    b.classList.toggle("marked", i === state.marked);
    if (i === state.marked) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

$("filter").addEventListener("input", () => {
  state.marked = null;
  narrow();
});

$("filter").addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    narrow(event.key === "ArrowDown" ? 1 : -1);
  } else if (event.key === "Enter") {
    event.preventDefault();
    if (event.repeat || state.marked === null) return;
    const i = state.marked;
    $("filter").value = "";
    state.marked = null;
    narrow();
    choose(i, event.timeStamp);
  } else if (event.key === "Escape") {
    $("filter").value = "";
    state.marked = null;
    narrow();
    $("filter").blur();
  }
});

// -- items ----------------------------------------------------------------------------------------------

async function prepare(raw) {
  const item = {...raw};
  if (raw.image) {
    const img = new Image();
    img.className = "item-image";
    img.alt = "the item to label";
    img.src = raw.image;
    try {
      await img.decode(); // decoded now, so showing it later costs nothing
    } catch (e) {
      // a picture the browser cannot decode is shown as broken; the person can skip it
    }
    item.el = img;
  } else {
    const div = document.createElement("div");
    div.className = "item-text";
    div.textContent = raw.text; // text, never HTML
    item.el = div;
  }
  return item;
}

// A picture shows at its real size, shrunk to fit the stage; a tiny one (digits, CIFAR) is enlarged by the largest
// whole factor that fits, nearest neighbour, so that it stays crisp instead of blurring.
function fit(el) {
  if (!(el instanceof HTMLImageElement) || !el.naturalWidth) return;
  const stage = $("stage");
  const room = (size) => Math.max(1, size - 2 * STAGE_MARGIN);
  const s = Math.min(room(stage.clientWidth) / el.naturalWidth, room(stage.clientHeight) / el.naturalHeight);
  const tiny = Math.max(el.naturalWidth, el.naturalHeight) < TINY;
  const scale = s < 1 ? s : tiny ? Math.floor(s) : 1;
  el.classList.toggle("pixelated", scale >= 2);
  el.style.width = `${Math.round(el.naturalWidth * scale)}px`;
  el.style.height = `${Math.round(el.naturalHeight * scale)}px`;
}

// The model's guess (only when aal-web runs with --show-model-guess): its class is pre-selected and marked as the
// model's; the person confirms it with Enter or picks another class.
function guessOf(item) {
  const guess = item ? item.guess : undefined;
  return Number.isInteger(guess) && guess >= 0 && guess < state.classes.length ? guess : null;
}

function markGuess(item) {
  const guess = guessOf(item);
  for (const b of $("classes").children) {
    const mine = guess !== null && Number(b.dataset.class) === guess;
    b.classList.toggle("guess", mine);
    b.setAttribute("aria-pressed", mine ? "true" : "false");
    if (mine) b.dataset.guess = `model's guess ${Math.round(100 * item.guess_probability)}%`;
    else delete b.dataset.guess;
  }
}

function render() {
  const stage = $("stage");
  const entry = state.correcting !== null ? state.history[state.correcting] : null;
  const shown = entry ? entry.item : state.current;
  for (const b of $("classes").children) b.classList.toggle("was", !!entry && Number(b.dataset.class) === entry.label);
  markGuess(entry ? null : shown);
  $("desk").classList.toggle("correcting", !!entry);
  if (entry) {
    const was = state.classes[entry.label];
    $("banner").textContent = `Changing your label “${was}” for this item: press the right class, or Esc.`;
  } else if ($("banner").textContent.startsWith("Changing")) {
    $("banner").textContent = "";
  }
  if (!shown) {
    const p = document.createElement("p");
    p.className = "waiting";
    p.textContent = "Waiting for items to label…";
    stage.replaceChildren(p);
    stage.dataset.item = stage.dataset.lease = stage.dataset.deadline = "";
    $("meta").textContent = "";
    return;
  }
  stage.replaceChildren(shown.el);
  fit(shown.el);
  stage.dataset.item = shown.lease; // which item is shown (its lease, also while it is being corrected)
  stage.dataset.lease = entry ? "" : shown.lease;
  stage.dataset.deadline = entry ? "" : String(shown.deadline);
  // in an annotator's words, not the system's: whether a model chose this item or it came before any model
  $("meta").textContent = !shown.strategy ? "" : shown.model_version > 0
    ? `chosen by the model (version ${shown.model_version}) as one it is unsure of` : "chosen to start with, before any model";
  if (!entry && guessOf(shown) !== null) {
    $("meta").textContent += ` · pre-selected: the model's guess “${state.classes[shown.guess]}” ` +
      `(${Math.round(100 * shown.guess_probability)}%), Enter confirms it, or press another class`;
  }
  if (!entry && state.pendingSince !== null) {
    const since = state.pendingSince;
    state.pendingSince = null;
    requestAnimationFrame(() => window.aalLatencies.push(performance.now() - since));
  }
}

// Keep an item on screen and the next one ready, for as long as this page is registered.
async function fill() {
  if (state.filling) return;
  state.filling = true;
  let backoff = 500;
  try {
    while (state.tab && (!state.current || !state.next)) {
      const {session, tab, generation} = state;
      let r;
      try {
        r = await api("lease", {session, tab, wait: LONG_POLL_SECONDS});
      } catch (err) {
        if (generation !== state.generation) continue;
        if (err.status !== 0 && handleExpired(err)) return;
        setStatus(`${err.message}; retrying`);
        await sleep(backoff);
        backoff = Math.min(2 * backoff, MAX_BACKOFF_MS);
        continue;
      }
      backoff = 500;
      if (generation !== state.generation) continue; // the old registration's leases were given back
      if ($("status").textContent.endsWith("retrying")) setStatus("");
      if (!r.item) {
        if (!state.current) render();
        continue;
      }
      const item = await prepare(r.item);
      if (generation !== state.generation) continue;
      if (!state.current) {
        state.current = item;
        if (state.correcting === null) render();
      } else {
        state.next = item;
      }
    }
  } finally {
    state.filling = false;
  }
}

// Resolves once the frame under way is drawn (or SEND_AFTER_MS later, in a tab whose frames have stopped): the
// network work a key sets off waits until the next item is on screen.
function afterFrame() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => setTimeout(resolve, 0));
    setTimeout(resolve, SEND_AFTER_MS);
  });
}

// Send what a key did to the item `lease` after the frame; should the page close first, the close says it.
async function send(path, body) {
  state.unsent.set(body.lease, {path, ...body});
  await afterFrame();
  if (!state.unsent.delete(body.lease)) throw new ApiError(0, "the page was closed");
  return api(path, body);
}

function advance(since) {
  const upcoming = state.later.length ? state.later.pop() : state.next;
  if (!upcoming) window.aalNotReady++;
  if (upcoming === state.next) state.next = null;
  state.current = upcoming || null;
  state.pendingSince = since;
  render();
  afterFrame().then(fill);
}

function choose(label, since) {
  if (state.correcting !== null) return correct(label);
  const item = state.current;
  if (!item || !state.tab) return;
  const {session, tab} = state;
  advance(since);
  const entry = {item, label, order: ++state.order};
  entry.ack = send("label", {session, tab, lease: item.lease, label}).then((r) => {
    window.aalAckLatencies.push(performance.now() - since);
    showStats(r.stats);
    if ($("status").dataset.about) setStatus(""); // an earlier item's failure: this one went through
    return r;
  });
  state.history.push(entry);
  if (state.history.length > UNDO_DEPTH) state.history.shift();
  entry.ack.catch((err) => {
    const i = state.history.indexOf(entry);
    if (i >= 0 && state.correcting === null) state.history.splice(i, 1);
    if (!handleExpired(err, tab)) setStatus(`Your label “${state.classes[label]}” was not saved: ${err.message}`, item.lease);
  });
}

function giveBack(how, since) {
  const item = state.current;
  if (state.correcting !== null || !item || !state.tab) return;
  const {session, tab} = state;
  advance(since);
  send(how, {session, tab, lease: item.lease}).catch((err) => {
    if (!handleExpired(err, tab)) setStatus(`An item could not be put back: ${err.message}`, item.lease);
  });
}

// Skip: the item goes at once, but the skip (permanent: nobody is offered the item again) is sent only after
// skipUndoMs(), or when the page closes. Until then U takes it back, and the item, still leased, shows again.
function skip(since) {
  const item = state.current;
  if (state.correcting !== null || !item || !state.tab) return;
  const {session, tab} = state;
  advance(since);
  const pending = {item, session, tab, order: ++state.order};
  state.unsent.set(item.lease, {path: "skip", session, tab, lease: item.lease}); // a closing page sends it
  pending.timer = setTimeout(() => sendSkip(pending), skipUndoMs());
  state.skips.push(pending);
  flash(`Skipped: nobody will be asked to label it. U takes it back (${Math.round(skipUndoMs() / 1000)} s).`,
    skipUndoMs());
}

function sendSkip(pending) {
  const i = state.skips.indexOf(pending);
  if (i >= 0) state.skips.splice(i, 1);
  const {session, tab, item} = pending;
  if (!state.unsent.delete(item.lease)) return; // the page closed, and its goodbye said it
  api("skip", {session, tab, lease: item.lease}).catch((err) => {
    if (!handleExpired(err, tab)) setStatus(`An item could not be skipped: ${err.message}`, item.lease);
  });
}

function unskip(pending) {
  clearTimeout(pending.timer);
  state.skips.splice(state.skips.indexOf(pending), 1);
  state.unsent.delete(pending.item.lease);
  if (state.current) state.later.push(state.current);
  state.current = pending.item;
  render();
  flash("Skip taken back.");
}

// Forget skips not sent (`leases`: only those; all by default): their leases are gone, or the page's goodbye said them.
function dropSkips(leases) {
  state.skips = state.skips.filter((pending) => {
    if (leases && !leases.has(pending.item.lease)) return true;
    clearTimeout(pending.timer);
    state.unsent.delete(pending.item.lease);
    return false;
  });
}

function undo() {
  const skipped = state.skips[state.skips.length - 1];
  const labeled = state.history[state.history.length - 1];
  if (state.correcting === null && skipped && (!labeled || skipped.order > labeled.order)) {
    unskip(skipped);
    return;
  }
  if (!state.history.length) {
    flash("Nothing to undo yet.");
    return;
  }
  state.correcting = state.correcting === null ? state.history.length - 1 : Math.max(0, state.correcting - 1);
  render();
}

function cancelCorrection() {
  if (state.correcting === null) return;
  state.correcting = null;
  render();
}

async function correct(label) {
  const entry = state.history[state.correcting];
  state.correcting = null;
  render(); // back to the current item at once; the change is saved in the background
  try {
    await entry.ack; // the label being changed must be in L first
    if (entry.label === label) return;
    const r = await api("correct", {session: state.session, lease: entry.item.lease, label});
    entry.label = label;
    showStats(r.stats);
    flash(`Changed to “${state.classes[label]}”.`);
  } catch (err) {
    if (!handleExpired(err)) setStatus(`Your change to “${state.classes[label]}” was not saved: ${err.message}`);
  }
}

// -- staying alive, and leaving ---------------------------------------------------------------------------

async function heartbeat() {
  if (!state.tab) return;
  const {session, tab, generation} = state;
  let r;
  try {
    r = await api("heartbeat", {session, tab});
  } catch (err) {
    if (generation === state.generation && !handleExpired(err)) setStatus(`${err.message}; retrying`);
    return;
  }
  if (generation !== state.generation) return;
  showStats(r.stats);
  const lost = new Set(r.lost); // expired while the computer slept, say: drop them and lease others
  if (state.next && lost.has(state.next.lease)) state.next = null;
  state.later = state.later.filter((item) => !lost.has(item.lease));
  dropSkips(lost);
  if (state.current && lost.has(state.current.lease)) {
    state.current = state.later.length ? state.later.pop() : state.next;
    if (state.current === state.next) state.next = null;
    render();
  }
  for (const item of [state.current, state.next, ...state.later]) {
    if (item && r.deadlines[item.lease]) item.deadline = r.deadlines[item.lease];
  }
  if (state.current && state.correcting === null) $("stage").dataset.deadline = String(state.current.deadline);
  if ($("status").textContent.endsWith("retrying")) setStatus("");
  fill();
}

// This page's goodbye: what its last keys did that was not sent yet, and its leases back to the pool.
function leave() {
  if (state.tab && state.session) {
    const done = [...state.unsent.values()].filter((u) => u.tab === state.tab)
      .map(({path, lease, label}) => ({action: path, lease, label}));
    state.unsent.clear();
    const body = JSON.stringify({session: state.session, tab: state.tab, done});
    navigator.sendBeacon("/api/close", new Blob([body], {type: "text/plain"}));
  }
  dropSkips(); // said above
  state.tab = null;
  state.generation++;
  clearInterval(state.heartbeat);
}

addEventListener("pagehide", leave);

addEventListener("pageshow", (event) => {
  if (event.persisted && state.session) openTab(); // back from the back/forward cache: register again
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") heartbeat(); // timers of hidden tabs are throttled
});

addEventListener("resize", () => {
  const el = $("stage").firstElementChild;
  if (el) fit(el);
});

document.addEventListener("keydown", (event) => {
  if ($("desk").hidden || event.target.closest("input, textarea, select")) return;
  if (event.altKey || event.metaKey) return;
  if (event.ctrlKey) {
    if (event.key === "z") {
      event.preventDefault();
      undo();
    }
    return;
  }
  if (event.repeat) return; // a held key labels one item, not a run of them
  const key = event.key;
  if (state.keys.has(key)) {
    event.preventDefault();
    choose(state.keys.get(key), event.timeStamp);
  } else if (key === "Enter" && state.correcting === null && guessOf(state.current) !== null) {
    event.preventDefault();
    choose(state.current.guess, event.timeStamp); // the person confirms the pre-selected guess
  } else if (key === "Delete") {
    event.preventDefault();
    skip(event.timeStamp);
  } else if (key === "/" && !$("find").hidden) {
    event.preventDefault();
    $("filter").focus();
  } else if (key === "d" || key === "D") {
    giveBack("defer", event.timeStamp);
  } else if (key === "u" || key === "U" || key === "Backspace") {
    event.preventDefault();
    undo();
  } else if (key === "Escape") {
    cancelCorrection();
  } else if ((key === "g" || key === "G") && !$("guidelines").hidden) {
    $("guidelines").open = !$("guidelines").open;
  }
});

$("skip").addEventListener("click", (event) => {
  event.currentTarget.blur();
  skip(event.timeStamp);
});
$("defer").addEventListener("click", (event) => {
  event.currentTarget.blur();
  giveBack("defer", event.timeStamp);
});
$("undo").addEventListener("click", (event) => {
  event.currentTarget.blur();
  undo();
});

if (state.session) openTab();
else showLogin("");
