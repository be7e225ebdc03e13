// Shoal preheat console. No framework: the page is small, and building it
// needs no toolchain. Every value from the server goes into the DOM as text
// (textContent), never as HTML.
"use strict";

const API = "/console/api";
const main = document.getElementById("main");
const conn = document.getElementById("conn");
let overview = null; // last "overview" event
let stream = null; // EventSource of the current view
let streamJob = 0;
let current = ""; // rendered route
let swarmTimer = 0; // polls the swarm listing while its page is shown

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function stateBadge(s) { return el("span", { class: "state " + s }, s); }

async function call(method, path, body) {
  const opt = { method, headers: { "X-Shoal-Console": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, opt);
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text || r.statusText }; }
  if (!r.ok) {
    if (r.status === 401) { showLogin(); }
    throw new Error((data && data.error) || (r.status + " " + r.statusText));
  }
  return data;
}

function setMain(...kids) {
  main.replaceChildren(...kids);
}

// ---- session ----

async function start() {
  let s;
  try {
    s = await (await fetch(API + "/session", { credentials: "same-origin" })).json();
  } catch (e) {
    setMain(el("p", { class: "error", role: "alert" }, "Cannot reach the preheat service: " + e.message));
    return;
  }
  if (s.loggedIn) { enterApp(s.auth === "token"); return; }
  if (s.auth === "open") {
    setMain(el("h2", {}, "Console unavailable"), el("p", { class: "error", role: "alert" }, s.error));
    return;
  }
  showLogin();
}

function showLogin() {
  closeStream();
  stopSwarms();
  current = "login";
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  const err = el("p", { class: "error", role: "alert", id: "login-error" });
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true, "aria-describedby": "token-hint" });
  const form = el("form", { class: "panel", id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const r = await fetch(API + "/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Shoal-Console": "1" }, body: JSON.stringify({ token: input.value }) });
    if (r.status === 204) { input.value = ""; enterApp(true); return; }
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* keep status */ }
    err.textContent = msg;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } },
    el("label", { for: "token" }, "API token"),
    input,
    el("p", { class: "hint", id: "token-hint" }, "One of the preheat service's apiTokens."),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "login-submit" }, "Log in")),
    err);
  setMain(el("h2", {}, "Log in"), form);
  input.focus();
}

function enterApp(canLogout) {
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = !canLogout;
  if (!location.hash || location.hash === "#") location.hash = "#/nodes";
  route();
}

document.getElementById("logout").addEventListener("click", async () => {
  await fetch(API + "/logout", { method: "POST", credentials: "same-origin", headers: { "X-Shoal-Console": "1" } });
  showLogin();
});

// ---- live updates ----

function closeStream() {
  if (stream) stream.close();
  stream = null;
  streamJob = 0;
}

function openStream(job) {
  if (stream && streamJob === job) return;
  closeStream();
  streamJob = job;
  stream = new EventSource(API + "/events" + (job ? "?job=" + job : ""));
  stream.addEventListener("open", () => { conn.textContent = "Live"; });
  stream.addEventListener("error", async () => {
    conn.textContent = "Reconnecting…";
    const s = await fetch(API + "/session", { credentials: "same-origin" }).then((r) => r.json()).catch(() => null);
    if (s && !s.loggedIn && s.auth === "token") showLogin();
  });
  stream.addEventListener("overview", (ev) => { overview = JSON.parse(ev.data); conn.textContent = "Live"; refresh(); });
  stream.addEventListener("job", (ev) => { renderJob(JSON.parse(ev.data)); });
  stream.addEventListener("problem", (ev) => {
    const p = document.getElementById("job-problem");
    if (p) p.textContent = JSON.parse(ev.data).error;
  });
}

// ---- routing ----

window.addEventListener("hashchange", route);

function route() {
  if (current === "login") current = "";
  stopSwarms();
  const h = location.hash.replace(/^#/, "");
  for (const a of document.querySelectorAll("nav a")) {
    if (h.startsWith(a.getAttribute("href").slice(1))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = h.match(/^\/jobs\/(\d+)$/);
  if (m) { jobPage(Number(m[1])); return; }
  if (h === "/jobs") { jobsPage(); return; }
  if (h === "/traffic") { trafficPage(); return; }
  if (h === "/swarms") { swarmsPage(); return; }
  nodesPage();
}

function refresh() {
  if (!overview) return;
  if (current === "nodes") fillNodes();
  if (current === "jobs") fillJobs();
  if (current === "traffic") fillTraffic();
}

// ---- nodes ----

function nodesPage() {
  current = "nodes";
  document.title = "Nodes · Shoal console";
  setMain(el("h2", { id: "nodes-title" }, "Nodes"),
    el("p", { class: "muted", id: "nodes-summary" }, "Waiting for data…"),
    el("table", { id: "nodes", "aria-labelledby": "nodes-title" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Node"), el("th", { scope: "col" }, "Groups"), el("th", { scope: "col" }, "Address"),
        el("th", { scope: "col" }, "Status"), el("th", { scope: "col", class: "num" }, "Cache used"),
        el("th", { scope: "col", class: "num" }, "Cache free"), el("th", { scope: "col", class: "num" }, "Served to nodes"),
        el("th", { scope: "col", class: "num" }, "From nodes"), el("th", { scope: "col", class: "num" }, "From registry"))),
      el("tbody", {})));
  openStream(0);
  fillNodes();
}

function fillNodes() {
  const tb = document.querySelector("#nodes tbody");
  if (!tb || !overview) return;
  const ns = overview.nodes;
  const alive = ns.filter((n) => n.alive).length;
  document.getElementById("nodes-summary").textContent = `${ns.length} node${ns.length === 1 ? "" : "s"}, ${alive} alive. Byte counts are since each agent started.`;
  tb.replaceChildren(...ns.flatMap((n) => [el("tr", { "data-node": n.id },
    el("th", { scope: "row" }, n.id),
    el("td", {}, (n.groups || []).join(", ") || el("span", { class: "muted" }, "none")),
    el("td", {}, n.address),
    el("td", {}, stateBadge(n.alive ? "alive" : "dead"), " ", el("span", { class: "muted" }, "seen " + ago(n.lastSeen))),
    el("td", { class: "num" }, bytes(n.cacheUsedBytes)),
    el("td", { class: "num" }, bytes(n.cacheFreeBytes)),
    el("td", { class: "num" }, bytes(n.bytesServedToPeers)),
    el("td", { class: "num" }, bytes(n.bytesFromPeers)),
    el("td", { class: "num" }, bytes(n.bytesFromRegistry))), ...downloadsRows(n)]));
  if (!ns.length) tb.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No agent has sent a heartbeat yet.")));
}

// downloadsRows shows a live node's long pulls in flight (blobs of 64 MiB
// and more, as its last heartbeat reported them): how far, from where, how
// fast. Nothing for a dead node: its last report is stale.
function downloadsRows(n) {
  const ds = n.alive ? (n.downloads || []) : [];
  if (!ds.length) return [];
  return [el("tr", { class: "downloads", "data-downloads-of": n.id },
    el("td", { colspan: 9 },
      el("ul", { "aria-label": "Blobs downloading on " + n.id }, ds.map((d) => {
        const got = (d.bytesFromPeers || 0) + (d.bytesFromRegistry || 0);
        const known = d.size > 0;
        const pct = known ? Math.floor(100 * got / d.size) : null;
        const fromNodes = got ? Math.round(100 * (d.bytesFromPeers || 0) / got) : 0;
        return el("li", { "data-digest": d.digest },
          el("code", {}, d.digest.slice(0, 19) + "…"), " ",
          known ? el("progress", { max: d.size, value: got, "aria-label": pct + "% of " + d.digest }) : null, " ",
          known ? `${bytes(got)} of ${bytes(d.size)} (${pct}%)` : `${bytes(got)} so far`,
          `, ${fromNodes}% from nodes, ${bytes(d.bytesPerSecond)}/s, started ${ago(d.startedAt)}`);
      }))))];
}

// ---- jobs ----

function field(id, label, hint, attrs) {
  return el("div", {},
    el("label", { for: id }, label),
    el("input", Object.assign({ id, name: id, "aria-describedby": id + "-hint" }, attrs || {})),
    el("p", { class: "hint", id: id + "-hint" }, hint));
}

function list(v) { return v.split(",").map((s) => s.trim()).filter(Boolean); }

function jobsPage() {
  current = "jobs";
  document.title = "Jobs · Shoal console";
  const err = el("p", { class: "error", role: "alert", id: "create-error" });
  const sizeKind = el("select", { id: "size-kind", name: "size-kind" },
    el("option", { value: "all" }, "all of them"), el("option", { value: "count" }, "a number of them"),
    el("option", { value: "percentage" }, "a percentage of them"));
  const form = el("form", { class: "panel", id: "create-form", novalidate: true, onsubmit: submitJob },
    el("div", { class: "fields" },
      field("image", "Image", "e.g. 127.0.0.1:5000/library/app:v1, repo@sha256:…, or a manifest URL", { required: true, autocomplete: "off", spellcheck: "false" }),
      field("platform", "Platforms", "os/arch[/variant], comma-separated; empty: every platform", { placeholder: "linux/amd64", autocomplete: "off" }),
      field("groups", "Node groups", "comma-separated; empty: every node, grouped or not", { autocomplete: "off", list: "known-groups" }),
      field("nodes", "Only these nodes", "node ids or IPs, comma-separated; empty: all nodes of the groups", { autocomplete: "off" }),
      el("div", {}, el("label", { for: "size-kind" }, "Of those nodes, preheat"), sizeKind,
        el("p", { class: "hint" }, "count or percentage picks among live nodes")),
      field("size", "Number or percentage", "a whole number; 1–100 for a percentage", { type: "number", min: "1", inputmode: "numeric" })),
    el("datalist", { id: "known-groups" }),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "create-submit" }, "Start preheat")),
    err);
  setMain(el("h2", {}, "Jobs"),
    el("h3", { id: "create-title" }, "New preheat job"), form,
    el("h3", { id: "jobs-title" }, "Recent jobs"),
    el("table", { id: "jobs", "aria-labelledby": "jobs-title" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Job"), el("th", { scope: "col" }, "State"), el("th", { scope: "col" }, "Image"),
        el("th", { scope: "col" }, "Targets"), el("th", { scope: "col", class: "num" }, "Nodes"),
        el("th", { scope: "col", class: "num" }, "Blobs"), el("th", { scope: "col" }, "Created"), el("th", { scope: "col" }, "Actions"))),
      el("tbody", {})));
  openStream(0);
  fillJobs();
}

function fillJobs() {
  const tb = document.querySelector("#jobs tbody");
  if (!tb || !overview) return;
  const dl = document.getElementById("known-groups");
  const groups = [...new Set(overview.nodes.flatMap((n) => n.groups || []))].sort();
  dl.replaceChildren(...groups.map((g) => el("option", { value: g })));
  tb.replaceChildren(...overview.jobs.map((j) => el("tr", { "data-job": j.id },
    el("th", { scope: "row" }, el("a", { href: "#/jobs/" + j.id }, "#" + j.id)),
    el("td", {}, stateBadge(j.state), j.error ? el("div", { class: "muted" }, j.error) : null),
    el("td", {}, j.image),
    el("td", {}, (j.groups || []).join(", ") || "all nodes"),
    el("td", { class: "num" }, j.nodes),
    el("td", { class: "num" }, j.blobs),
    el("td", {}, new Date(j.createdAt).toLocaleString()),
    el("td", {}, ["PENDING", "RUNNING"].includes(j.state)
      ? el("button", { type: "button", class: "danger", "aria-label": "Cancel job " + j.id, onclick: () => cancelJob(j.id) }, "Cancel")
      : null))));
  if (!overview.jobs.length) tb.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No jobs yet.")));
}

function invalid(id, msg) {
  const input = document.getElementById(id);
  input.setAttribute("aria-invalid", "true");
  input.focus();
  document.getElementById("create-error").textContent = msg;
}

async function submitJob(ev) {
  ev.preventDefault();
  const err = document.getElementById("create-error");
  err.textContent = "";
  for (const i of ev.target.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const v = (id) => document.getElementById(id).value.trim();
  const req = { image: v("image"), platforms: list(v("platform")), groups: list(v("groups")), nodes: list(v("nodes")) };
  if (!req.image) return invalid("image", "Enter the image to preheat.");
  for (const p of req.platforms) {
    if (!/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(p)) return invalid("platform", `Platform "${p}" is not os/arch[/variant], e.g. linux/amd64.`);
  }
  const kind = v("size-kind");
  if (kind !== "all") {
    const n = Number(v("size"));
    if (!Number.isInteger(n) || n < 1 || (kind === "percentage" && n > 100)) {
      return invalid("size", kind === "percentage" ? "Enter a percentage from 1 to 100." : "Enter a whole number of nodes, 1 or more.");
    }
    req[kind] = n;
  }
  const btn = document.getElementById("create-submit");
  btn.disabled = true;
  try {
    const j = await call("POST", "/jobs", req);
    location.hash = "#/jobs/" + j.id;
  } catch (e) {
    const m = e.message;
    const target = /image|repository|tag|digest|manifest|not found|registry/i.test(m) ? "image"
      : /platform/i.test(m) ? "platform" : /group/i.test(m) ? "groups" : /node/i.test(m) ? "nodes" : /count|percentage/i.test(m) ? "size" : null;
    if (target) invalid(target, m); else err.textContent = m;
  } finally {
    btn.disabled = false;
  }
}

async function cancelJob(id) {
  try {
    await call("DELETE", "/jobs/" + id);
    const st = document.getElementById("job-status");
    if (st) st.textContent = "Cancel requested.";
  } catch (e) {
    const p = document.getElementById("job-problem") || document.getElementById("create-error");
    if (p) p.textContent = "Cancel job " + id + ": " + e.message;
  }
}

// ---- one job ----

function jobPage(id) {
  current = "job";
  document.title = "Job " + id + " · Shoal console";
  setMain(el("p", {}, el("a", { href: "#/jobs" }, "← All jobs")),
    el("h2", { id: "job-title" }, "Job #" + id, " ", el("span", { id: "job-state" })),
    el("p", { class: "error", role: "alert", id: "job-problem" }),
    el("p", { role: "status", id: "job-status", class: "muted" }),
    el("div", { id: "job-body" }, el("p", {}, "Loading…")));
  openStream(id);
}

function renderJob(v) {
  const body = document.getElementById("job-body");
  if (!body || v.id !== streamJob) return;
  document.getElementById("job-state").replaceChildren(stateBadge(v.state));
  document.getElementById("job-problem").textContent = "";
  const byKey = {};
  for (const p of v.progress || []) byKey[p.nodeId + "|" + p.digest] = p;
  const short = (d) => d.replace(/^sha256:/, "").slice(0, 12);
  const targets = v.targets || [];
  const blobs = v.blobs || [];
  let done = 0;
  const failures = [];
  const rows = targets.map((t) => el("tr", {},
    el("th", { scope: "row" }, t.nodeId, t.offline ? el("span", { class: "muted" }, " (offline)") : null),
    blobs.map((b) => {
      const p = byKey[t.nodeId + "|" + b.digest];
      const over = ["SUCCESS", "FAILURE", "CANCELED"].includes(v.state);
      let st = p ? p.state : (over ? "—" : "PENDING");
      if (over && (st === "RUNNING" || st === "PENDING")) st = "stopped";
      if (st === "SUCCESS") done++;
      if (p && p.state === "FAILURE") failures.push([t.nodeId, b.digest, p.error]);
      const sym = { SUCCESS: "✓ done", FAILURE: "✗ failed", RUNNING: "… fetching", PENDING: "waiting" }[st] || st;
      return el("td", { class: "cell " + st, title: p && p.error ? p.error : (p && p.source ? "from " + p.source : "") },
        sym, p && p.state === "SUCCESS" && p.source ? el("div", { class: "muted" }, p.source) : null);
    })));
  const total = targets.length * blobs.length;
  const pct = total ? Math.round((100 * done) / total) : 0;
  const kv = el("dl", { class: "kv" },
    el("dt", {}, "Image"), el("dd", {}, v.image),
    el("dt", {}, "Digest"), el("dd", {}, v.digest || "—"),
    el("dt", {}, "Targets"), el("dd", {}, targetText(v)),
    el("dt", {}, "Source"), el("dd", {}, v.source || "—"),
    el("dt", {}, "Progress"), el("dd", {},
      el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct), "aria-label": "Fetches done" },
        barFill(pct)),
      `${done} of ${total} blob fetches done (${pct}%)`));
  const kids = [kv];
  if (v.error) kids.push(el("p", { class: "error", id: "job-error" }, v.error));
  if (["PENDING", "RUNNING"].includes(v.state)) {
    kids.push(el("div", { class: "actions" }, el("button", { type: "button", class: "danger", id: "cancel-job", onclick: () => cancelJob(v.id) }, "Cancel job")));
  }
  kids.push(el("h3", { id: "matrix-title" }, "Per node and blob"));
  kids.push(el("table", { class: "matrix", id: "matrix", "aria-labelledby": "matrix-title" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Node"),
      blobs.map((b) => el("th", { scope: "col", title: b.digest }, short(b.digest), el("div", { class: "muted" }, bytes(b.size)))))),
    el("tbody", {}, rows)));
  if (!targets.length) kids.push(el("p", { class: "muted" }, "No nodes chosen yet."));
  if ((v.emptyGroups || []).length) failures.unshift(["—", "—", "no nodes in group(s) " + v.emptyGroups.join(", ")]);
  if (failures.length) {
    kids.push(el("h3", { id: "fail-title" }, "Failures"));
    kids.push(el("table", { id: "failures", "aria-labelledby": "fail-title" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Node"), el("th", { scope: "col" }, "Blob"), el("th", { scope: "col" }, "Reason"))),
      el("tbody", {}, failures.map(([n, d, e]) => el("tr", {}, el("td", {}, n), el("td", {}, d === "—" ? d : short(d)), el("td", {}, e))))));
  }
  body.replaceChildren(...kids);
}

// barFill sets its width through the CSSOM: the page's CSP forbids style
// attributes.
function barFill(pct) {
  const s = el("span", {});
  s.style.width = pct + "%";
  return s;
}

function targetText(v) {
  const parts = [(v.groups || []).length ? "groups " + v.groups.join(", ") : "every node"];
  if ((v.nodes || []).length) parts.push("nodes " + v.nodes.join(", "));
  if (v.count) parts.push(v.count + " of them");
  if (v.percentage) parts.push(v.percentage + "% of them");
  return parts.join("; ");
}

// ---- swarms ----

// The tracker knows swarms by infohash only; peers are counted per class:
// nodes holding the whole blob, the registry's own seeder (origin), and
// nodes still downloading. The list is polled, not streamed: it comes from
// the tracker, not from preheat's store.
function swarmsPage() {
  current = "swarms";
  document.title = "Swarms · Shoal console";
  setMain(el("h2", { id: "swarms-title" }, "Swarms"),
    el("p", { class: "muted", id: "swarms-summary", role: "status" }, "Asking the tracker…"),
    el("p", { class: "error", role: "alert", id: "swarms-problem" }),
    el("table", { id: "swarms", "aria-labelledby": "swarms-title" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Infohash"),
        el("th", { scope: "col", class: "num" }, "Peers"),
        el("th", { scope: "col", class: "num" }, "Complete nodes"),
        el("th", { scope: "col", class: "num" }, "Registry (origin)"),
        el("th", { scope: "col", class: "num" }, "Downloading"),
        el("th", { scope: "col", class: "num" }, "Downloads done"))),
      el("tbody", {})));
  openStream(0);
  loadSwarms();
  swarmTimer = setInterval(loadSwarms, 3000);
}

function stopSwarms() {
  if (swarmTimer) clearInterval(swarmTimer);
  swarmTimer = 0;
}

async function loadSwarms() {
  const problem = document.getElementById("swarms-problem");
  let v;
  try {
    v = await call("GET", "/swarms");
  } catch (e) {
    if (problem) problem.textContent = "Cannot list swarms: " + e.message;
    return;
  }
  const tb = document.querySelector("#swarms tbody");
  if (current !== "swarms" || !tb) return;
  problem.textContent = "";
  const sum = document.getElementById("swarms-summary");
  if (!v.configured) {
    sum.textContent = "No tracker is configured: set tracker.url and tracker.token in the preheat config to see swarms.";
    tb.replaceChildren();
    return;
  }
  const ss = v.swarms || [];
  const peers = (s) => s.complete + s.origin + s.incomplete;
  const total = ss.reduce((n, s) => n + peers(s), 0);
  sum.textContent = `${ss.length} live swarm${ss.length === 1 ? "" : "s"}, ${total} peer${total === 1 ? "" : "s"} in all` +
    (v.limit && ss.length >= v.limit ? ` (the ${v.limit} busiest shown)` : "") + ". Updated " + new Date().toLocaleTimeString() + ".";
  tb.replaceChildren(...ss.map((s) => el("tr", { "data-infohash": s.infoHash },
    el("th", { scope: "row", class: "mono" }, s.infoHash),
    el("td", { class: "num" }, peers(s)),
    el("td", { class: "num" }, s.complete),
    el("td", { class: "num" }, s.origin),
    el("td", { class: "num" }, s.incomplete),
    el("td", { class: "num" }, s.downloaded))));
  if (!ss.length) tb.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No swarm has live peers.")));
}

// ---- savings ----

function trafficPage() {
  current = "traffic";
  document.title = "Savings · Shoal console";
  setMain(el("h2", {}, "Savings: registry egress vs bytes between nodes"),
    el("p", { id: "savings" }, "Waiting for data…"),
    el("h3", { id: "chart-title" }, "Bytes nodes fetched per minute, last 6 hours"),
    el("p", { class: "legend" },
      el("span", {}, el("span", { class: "swatch reg" }), "from the registry (egress)"),
      el("span", {}, el("span", { class: "swatch peers" }), "from other nodes")),
    el("div", { id: "chart" }),
    el("table", { id: "traffic", "aria-labelledby": "chart-title" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Minute"), el("th", { scope: "col", class: "num" }, "From registry"),
        el("th", { scope: "col", class: "num" }, "From nodes"))),
      el("tbody", {})));
  openStream(0);
  fillTraffic();
}

function fillTraffic() {
  const tb = document.querySelector("#traffic tbody");
  if (!tb || !overview) return;
  const pts = overview.traffic || [];
  let reg = 0, peers = 0;
  for (const p of pts) { reg += p.fromRegistry; peers += p.fromPeers; }
  let nreg = 0, npeers = 0, served = 0;
  for (const n of overview.nodes) { nreg += n.bytesFromRegistry || 0; npeers += n.bytesFromPeers || 0; served += n.bytesServedToPeers || 0; }
  const share = reg + peers ? Math.round((100 * peers) / (reg + peers)) : 0;
  document.getElementById("savings").textContent =
    `Last 6 hours: nodes fetched ${bytes(reg)} from the registry and ${bytes(peers)} from each other: ${share}% of what they fetched did not cost registry egress. ` +
    `Agents now running report ${bytes(nreg)} from the registry, ${bytes(npeers)} from nodes, ${bytes(served)} served to nodes.`;
  tb.replaceChildren(...pts.slice(-30).reverse().map((p) => el("tr", {},
    el("td", {}, new Date(p.minute).toLocaleTimeString()), el("td", { class: "num" }, bytes(p.fromRegistry)), el("td", { class: "num" }, bytes(p.fromPeers)))));
  if (!pts.length) tb.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No node has fetched anything in this window.")));
  drawChart(pts);
}

function drawChart(pts) {
  const box = document.getElementById("chart");
  const NS = "http://www.w3.org/2000/svg";
  const W = 900, H = 260, L = 70, B = 30, T = 10, R = 10;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Bar chart of bytes per minute from the registry and from other nodes; the table below has the numbers.");
  const now = Math.floor(Date.now() / 60000);
  const span = 360;
  const maxv = Math.max(1, ...pts.map((p) => Math.max(p.fromRegistry, p.fromPeers)));
  const x = (m) => L + ((m - (now - span)) / span) * (W - L - R);
  const y = (v) => H - B - (v / maxv) * (H - B - T);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.append(e);
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#4a5260" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#4a5260" });
  add("text", { x: L - 6, y: T + 10, "text-anchor": "end", "font-size": "11", fill: "#1b1f24" }, bytes(maxv));
  add("text", { x: L - 6, y: H - B, "text-anchor": "end", "font-size": "11", fill: "#1b1f24" }, "0");
  for (const h of [6, 4, 2, 0]) add("text", { x: x(now - h * 60), y: H - 10, "text-anchor": "middle", "font-size": "11", fill: "#1b1f24" }, h ? `-${h} h` : "now");
  const bw = Math.max(1.5, (W - L - R) / span / 2);
  for (const p of pts) {
    const m = Math.floor(new Date(p.minute).getTime() / 60000);
    add("rect", { x: x(m) - bw, y: y(p.fromRegistry), width: bw, height: H - B - y(p.fromRegistry), fill: "#a40e26" });
    add("rect", { x: x(m), y: y(p.fromPeers), width: bw, height: H - B - y(p.fromPeers), fill: "#116329" });
  }
  box.replaceChildren(svg);
}

start();
