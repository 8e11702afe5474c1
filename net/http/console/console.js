// Mamba's console: a page per hash route (#/topics, #/groups/g, ...),
// drawn from the broker's own HTTP API (/v1/...). No framework, no build
// step, nothing fetched from anywhere but this broker. Everything shown is
// put in the page as text (never as HTML), so names and record values
// cannot inject markup.
"use strict";

// ---- the API ------------------------------------------------------------

const TOKEN_KEY = "mamba.token";

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    const given = prompt("This broker's HTTP API needs its token (mamba serve --http-token):");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      return api(method, path, body);
    }
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const get = (path) => api("GET", path);
const post = (path, body) => api("POST", path, body);
const enc = encodeURIComponent;

// ---- the page -----------------------------------------------------------

/** An element: h("td", {class: "num"}, "12", child, ...). Strings are text. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return h("p", { class: "muted" }, empty || "None.");
  const head = h("tr", {}, headers.map((t) => {
    const [text, cls] = Array.isArray(t) ? t : [t];
    return h("th", { class: cls }, text);
  }));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

function row(...cells) {
  return h("tr", {}, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))));
}

const num = (value) => h("td", { class: "num" }, value === null || value === undefined ? "–" : fmtNum(value));

function fmtNum(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : String(n);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function fmtRate(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M/s`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k/s`;
  return `${n.toFixed(n < 10 ? 1 : 0)} /s`;
}

function fmtMs(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 0.001 ? `${(seconds * 1e6).toFixed(0)} µs` : `${(seconds * 1e3).toFixed(1)} ms`;
}

function pill(text, kind) { return h("span", { class: `pill ${kind || ""}` }, text); }

function statusPill(status) {
  const kind = { alive: "ok", online: "ok", leader: "ok", stable: "ok", fenced: "bad", offline: "bad",
    follower: "", empty: "", candidate: "warn", decommissioning: "warn" }[status];
  return pill(status, kind === undefined ? "warn" : kind);
}

let flashTimer = null;
function flash(message, isError) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { box.hidden = true; }, isError ? 12000 : 5000);
}

/** Runs an action from a button or form; says what happened. */
async function act(what, action) {
  try {
    const result = await action();
    flash(what);
    return result;
  } catch (e) {
    flash(`${e.message}`, true);
    return undefined;
  }
}

function field(label, input) { return h("label", {}, label, input); }

/** A button that deletes `what` `name` (after asking), then goes to `back`. */
function deleteButton(what, name, alsoGone, path, back) {
  return h("button", {
    class: "danger",
    onclick: async () => {
      if (!confirm(`Delete ${what} ${name} ${alsoGone}?`)) return;
      if (await act(`Deleted ${what} ${name}`, () => api("DELETE", path)) !== undefined) location.hash = back;
    },
  }, `Delete ${what}`);
}

// ---- pages --------------------------------------------------------------

/** Timers of the page on screen, stopped when another page is drawn. */
let timers = [];
function every(ms, fn) { timers.push(setInterval(fn, ms)); }

const pages = {
  overview: overviewPage,
  topics: topicsPage,
  topic: topicPage,
  messages: messagesPage,
  groups: groupsPage,
  group: groupPage,
  cluster: clusterPage,
};

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  let [name, ...args] = parts;
  if (name === "topics" && args.length) name = "topic";
  if (name === "groups" && args.length) name = "group";
  const page = pages[name] || overviewPage;
  const nav = { topic: "topics", group: "groups" }[name] || name;
  for (const a of document.querySelectorAll("#side a")) {
    a.classList.toggle("active", a.dataset.page === nav);
  }
  const root = document.getElementById("page");
  try {
    const content = await page(...args);
    root.replaceChildren(content);
  } catch (e) {
    root.replaceChildren(h("h1", {}, "Something went wrong"), h("p", {}, e.message));
  }
}

// Overview: health, brokers, and charts of the broker's traffic, drawn
// from /v1/stats every 2 s (rates between two samples; p99 from the
// latency histograms' growth).

const SAMPLE_MS = 2000;
const HISTORY = 150; // 5 minutes

function p99(now, before) {
  if (!now || !before) return null;
  const counts = now.buckets.map(([, n], i) => n - (before.buckets[i] ? before.buckets[i][1] : 0));
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i += 1) {
    seen += counts[i];
    if (seen >= total * 0.99) return now.buckets[i][0];
  }
  return null;
}

function lineChart(title, series, format) {
  const box = h("div", { class: "chart" });
  const legend = h("span", { class: "legend" });
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 600 150");
  svg.setAttribute("preserveAspectRatio", "none");
  box.append(h("div", { class: "title" }, h("span", {}, title), legend), svg);
  const colors = ["#2f6fde", "#15803d", "#b45309"];
  const data = series.map(() => []);
  function draw() {
    svg.replaceChildren();
    const values = data.flat().filter((v) => v !== null);
    const max = Math.max(1e-9, ...values) * 1.15;
    for (let g = 1; g <= 3; g += 1) {
      const line = document.createElementNS(svgNs, "line");
      const y = 150 - (g * 150) / 4;
      Object.entries({ x1: 0, x2: 600, y1: y, y2: y, stroke: "#eef1f5" }).forEach(([k, v]) => line.setAttribute(k, v));
      svg.append(line);
    }
    const label = document.createElementNS(svgNs, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 12);
    label.setAttribute("fill", "#98a2b3"); label.setAttribute("font-size", 11);
    label.textContent = format(max / 1.15);
    svg.append(label);
    data.forEach((points, s) => {
      // Newest at the right edge; the line grows leftwards.
      const x = (i) => 600 - ((points.length - 1 - i) * 600) / (HISTORY - 1);
      const path = points.map((v, i) => (v === null ? null : `${x(i)},${150 - (v / max) * 150}`))
        .filter(Boolean).join(" ");
      const line = document.createElementNS(svgNs, "polyline");
      line.setAttribute("points", path);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", colors[s]);
      line.setAttribute("stroke-width", 2);
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
    });
    legend.replaceChildren(...series.map((name, s) => {
      const last = data[s].length ? data[s][data[s].length - 1] : null;
      return h("span", {}, h("i", { style: `background:${colors[s]}` }), `${name} ${last === null ? "–" : format(last)}`);
    }));
  }
  return {
    element: box,
    push(values) {
      values.forEach((v, s) => { data[s].push(v); if (data[s].length > HISTORY) data[s].shift(); });
      draw();
    },
  };
}

async function overviewPage() {
  const [cluster, topics] = await Promise.all([get("/v1/cluster").catch(() => null), get("/v1/topics")]);
  const cards = h("div", { class: "cards" });
  const alive = cluster ? cluster.brokers.filter((b) => b.status === "alive").length : 1;
  const offline = cluster ? cluster.offline_partitions.length : 0;
  const healthy = offline === 0 && (!cluster || cluster.controller_id !== null);
  const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  cards.append(
    card("Health", pill(healthy ? "healthy" : "degraded", healthy ? "ok" : "bad")),
    card("Brokers alive", cluster ? `${alive} / ${cluster.brokers.length}` : "1"),
    card("Controller", cluster && cluster.controller_id !== null ? `broker ${cluster.controller_id}` : "–"),
    card("Topics", fmtNum(topics.filter((t) => !t.name.startsWith("__")).length)),
    card("Offline partitions", fmtNum(offline)),
  );
  const throughput = lineChart("Records per second (this broker)", ["in", "out"], fmtRate);
  const bytes = lineChart("Bytes per second (this broker)", ["in", "out"], (v) => `${fmtBytes(v)}/s`);
  const latency = lineChart("Request latency, p99", ["produce", "fetch"], fmtMs);
  let before = null;
  async function sample() {
    let now;
    try { now = await get("/v1/stats"); } catch (e) { return; }
    if (before) {
      const s = (now.time_ms - before.time_ms) / 1000 || 1;
      throughput.push([(now.records_in_total - before.records_in_total) / s, (now.records_out_total - before.records_out_total) / s]);
      bytes.push([(now.bytes_in_total - before.bytes_in_total) / s, (now.bytes_out_total - before.bytes_out_total) / s]);
      latency.push([p99(now.latency.produce, before.latency.produce), p99(now.latency.fetch, before.latency.fetch)]);
    }
    before = now;
  }
  await sample();
  every(SAMPLE_MS, sample);
  const brokers = cluster ? table(
    ["Broker", "Status", "Client address", ["Partitions led", "num"], ["Hosted", "num"], ["Last heartbeat", "num"]],
    cluster.brokers.map((b) => row(String(b.node_id), statusPill(b.status), h("span", { class: "mono" }, b.client_address),
      num(b.partitions_led), num(b.partitions_hosted), num(b.last_heartbeat_age_ms === null ? null : `${b.last_heartbeat_age_ms} ms ago`))),
  ) : h("p", { class: "muted" }, "A broker on its own.");
  return h("div", {}, h("h1", {}, "Overview"), cards,
    h("div", { class: "charts" }, throughput.element, bytes.element, latency.element),
    h("h2", {}, "Brokers"), brokers);
}

// Topics: the list with sizes and rates, and a form to create one.

async function topicsPage() {
  const [topics, stats] = await Promise.all([get("/v1/topics"), get("/v1/stats")]);
  const local = Object.fromEntries(stats.topics.map((t) => [t.name, t]));
  const showInternal = h("input", { type: "checkbox", id: "internal" });
  const body = h("tbody");
  const rates = {};
  function draw() {
    body.replaceChildren(...topics
      .filter((t) => showInternal.checked || !t.name.startsWith("__"))
      .map((t) => {
        const s = local[t.name];
        return row(h("a", { href: `#/topics/${enc(t.name)}` }, t.name), num(t.partitions), num(t.replication_factor),
          h("td", { class: "num" }, s ? fmtBytes(s.size_bytes) : "–"),
          h("td", { class: "num" }, rates[t.name] === undefined ? "…" : fmtRate(rates[t.name])));
      }));
  }
  showInternal.addEventListener("change", draw);
  let before = stats;
  every(SAMPLE_MS, async () => {
    const now = await get("/v1/stats").catch(() => null);
    if (!now) return;
    const was = Object.fromEntries(before.topics.map((t) => [t.name, t]));
    const s = (now.time_ms - before.time_ms) / 1000 || 1;
    for (const t of now.topics) {
      rates[t.name] = was[t.name] ? (t.records_in_total - was[t.name].records_in_total) / s : 0;
      local[t.name] = t;
    }
    before = now;
    draw();
  });
  draw();
  const name = h("input", { name: "name", placeholder: "orders", required: true, pattern: "[A-Za-z0-9._\\-]+" });
  const partitions = h("input", { name: "partitions", type: "number", min: 1, value: "3", style: "width:90px" });
  const rf = h("input", { name: "replication_factor", type: "number", min: 1, placeholder: "default", style: "width:110px" });
  const form = h("form", {
    class: "inline",
    onsubmit: async (e) => {
      e.preventDefault();
      const topic = { name: name.value.trim(), partitions: Number(partitions.value) };
      if (rf.value) topic.replication_factor = Number(rf.value);
      if (await act(`Created topic ${topic.name}`, () => post("/v1/topics", topic)) !== undefined) {
        location.hash = `#/topics/${enc(topic.name)}`;
      }
    },
  }, field("Name", name), field("Partitions", partitions), field("Replication factor", rf), h("button", { type: "submit" }, "Create topic"));
  return h("div", {}, h("h1", {}, "Topics"), form,
    h("div", { class: "toolbar" }, h("label", { style: "flex-direction:row;align-items:center;gap:6px" }, showInternal, "Show internal topics")),
    h("table", {}, h("thead", {}, row(...["Topic", "Partitions", "Replication", "Size here", "Records in"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))), body),
    h("p", { class: "muted" }, "Size and rate are of the replicas on this broker."));
}

async function topicPage(name) {
  const topic = await get(`/v1/topics/${enc(name)}`);
  const configs = table(["Config", "Value"], Object.entries(topic.configs).map(([k, v]) => row(h("span", { class: "mono" }, k), h("span", { class: "mono" }, v))), "Every config at its default.");
  const key = h("input", { placeholder: "retention.ms" });
  const value = h("input", { placeholder: "value (empty: back to default)" });
  const alter = h("form", {
    class: "inline",
    onsubmit: async (e) => {
      e.preventDefault();
      const change = { configs: { [key.value.trim()]: value.value === "" ? null : value.value } };
      if (await act(`Set ${key.value} on ${name}`, () => api("PATCH", `/v1/topics/${enc(name)}/configs`, change)) !== undefined) route();
    },
  }, field("Config", key), field("Value", value), h("button", { type: "submit", class: "secondary" }, "Set config"));
  const partitions = table(
    [["Partition", "num"], "Leader", "Replicas", "In sync", "Status", ["Start", "num"], ["End", "num"], ["High watermark", "num"], ["Size", "num"]],
    topic.partitions.map((p) => row(num(p.partition), p.leader === null ? "none" : String(p.leader), p.replicas.join(", "), p.isr.join(", "),
      statusPill(p.status), num(p.log_start_offset), num(p.log_end_offset), num(p.high_watermark),
      h("td", { class: "num" }, fmtBytes(p.size_bytes)))),
  );
  const remove = deleteButton("topic", name, "and all its records", `/v1/topics/${enc(name)}`, "#/topics");
  return h("div", {}, h("h1", {}, `Topic ${name}`),
    h("div", { class: "toolbar" }, h("a", { href: `#/messages/${enc(name)}` }, "Browse messages →"), h("span", { style: "flex:1" }), remove),
    h("h2", {}, "Partitions"), partitions, h("h2", {}, "Configs"), configs, alter);
}

// Messages: read a partition from an offset or a time, show keys, values
// and headers as text, JSON or hex; produce a test message.

function bytesOf(text, encoding) {
  if (encoding === "base64") return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(text);
}

function render(text, encoding, as) {
  if (text === null || text === undefined) return "(none)";
  const bytes = bytesOf(text, encoding);
  if (as === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = Array.from(bytes.slice(i, i + 16));
      lines.push(`${i.toString(16).padStart(6, "0")}  ${chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(48)} ${chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("")}`);
    }
    return lines.join("\n") || "(empty)";
  }
  const decoded = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (as === "json") {
    try { return JSON.stringify(JSON.parse(decoded), null, 2); } catch (e) { return `${decoded}\n(not JSON)`; }
  }
  return decoded;
}

async function messagesPage(topicName) {
  const topics = (await get("/v1/topics")).filter((t) => !t.name.startsWith("__") || t.name === topicName);
  const topic = h("select", { name: "topic" }, topics.map((t) => h("option", { value: t.name, selected: t.name === topicName }, t.name)));
  const partition = h("input", { name: "partition", type: "number", min: 0, value: "0", style: "width:90px" });
  const from = h("select", { name: "from" }, h("option", { value: "newest" }, "Newest 20"), h("option", { value: "offset" }, "From offset"), h("option", { value: "time" }, "From time"));
  const offset = h("input", { name: "offset", type: "number", min: 0, value: "0", style: "width:110px" });
  const time = h("input", { name: "time", type: "datetime-local", step: 1 });
  const as = h("select", { name: "as" }, ["text", "json", "hex"].map((v) => h("option", { value: v }, v)));
  const results = h("div", { id: "records" });
  let last = [];
  function show() {
    results.replaceChildren(...(last.length ? last.map((r) => h("div", { class: "record" },
      h("div", { class: "meta" }, h("span", {}, `offset ${r.offset}`), h("span", {}, new Date(r.timestamp_ms).toISOString()),
        r.key !== null && r.key !== undefined ? h("span", { class: "key" }, `key ${render(r.key, r.encoding, as.value === "hex" ? "text" : as.value)}`) : null,
        r.headers.length ? h("span", {}, `headers ${r.headers.map((x) => `${x.name}=${render(x.value, r.encoding, "text")}`).join(", ")}`) : null),
      h("pre", {}, render(r.value, r.encoding, as.value)))) : [h("p", { class: "muted" }, "No records there.")]));
  }
  as.addEventListener("change", show);
  async function read(e) {
    if (e) e.preventDefault();
    if (!topic.value) return;
    const p = Number(partition.value);
    let query;
    if (from.value === "newest") {
      const detail = await get(`/v1/topics/${enc(topic.value)}`);
      const part = detail.partitions.find((x) => x.partition === p);
      const end = part && part.high_watermark !== null ? part.high_watermark : 0;
      const start = part && part.log_start_offset !== null ? part.log_start_offset : 0;
      query = `offset=${Math.max(start, end - 20)}`;
    } else if (from.value === "time") {
      query = `timestamp_ms=${time.value ? new Date(time.value).getTime() : 0}`;
    } else {
      query = `offset=${Number(offset.value)}`;
    }
    try {
      const answer = await get(`/v1/topics/${enc(topic.value)}/partitions/${p}/records?${query}&max_bytes=262144`);
      last = answer.records.slice(0, 200);
      show();
    } catch (err) {
      last = [];
      results.replaceChildren(h("p", { class: "muted" }, err.message));
    }
  }
  const key = h("input", { name: "key", placeholder: "optional" });
  const value = h("textarea", { name: "value", placeholder: '{"hello": "world"}' });
  const header = h("input", { name: "header", placeholder: "name=value (optional)" });
  const produce = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const record = { value: value.value, partition: Number(partition.value) };
      if (key.value) record.key = key.value;
      if (header.value.includes("=")) {
        const [n, ...v] = header.value.split("=");
        record.headers = [{ name: n.trim(), value: v.join("=") }];
      }
      const answer = await act("Produced", () => post(`/v1/topics/${enc(topic.value)}/records`, [record]));
      const produced = answer && answer.records[0];
      if (produced && produced.error) flash(produced.error.detail, true);
      else if (produced) {
        flash(`Produced to partition ${produced.partition} at offset ${produced.offset}`);
        from.value = "newest";
        read();
      }
    },
  }, h("div", { class: "inline" }, field("Key", key), field("Header", header)), field("Value", value),
  h("div", { class: "inline" }, h("button", { type: "submit", class: "secondary" }, "Produce to this partition")));
  if (topicName) setTimeout(read, 0);
  return h("div", {}, h("h1", {}, "Messages"),
    topics.length === 0 ? h("p", { class: "muted" }, "No topics yet: create one on the Topics page.") : null,
    h("form", { class: "inline", onsubmit: read }, field("Topic", topic), field("Partition", partition), field("Start", from),
      field("Offset", offset), field("Time", time), field("Show as", as), h("button", { type: "submit" }, "Read")),
    h("div", { class: "split" }, results, h("div", {}, h("h2", { style: "margin-top:0" }, "Produce a test message"), produce)));
}

// Consumer groups: list, then members, assignment, lag per partition,
// offsets reset and delete.

async function groupsPage() {
  const groups = await get("/v1/groups");
  return h("div", {}, h("h1", {}, "Consumer groups"),
    table(["Group", "State", ["Members", "num"], "Assignor"],
      groups.map((g) => row(h("a", { href: `#/groups/${enc(g.group_id)}` }, g.group_id), statusPill(g.state), num(g.members), g.assignor)),
      "No consumer groups yet."));
}

async function groupPage(id) {
  const group = await get(`/v1/groups/${enc(id)}`);
  const members = table(["Member", "Client", "Host", ["Epoch", "num"], "Assigned"],
    group.members.map((m) => row(h("span", { class: "mono" }, m.member_id), m.client_id, m.host, num(m.member_epoch),
      m.assignment.map((a) => `${a.topic}: ${a.partitions.join(", ")}`).join("; "))), "No members: nobody reads as this group now.");
  const lag = table(["Topic", ["Partition", "num"], ["Committed", "num"], ["High watermark", "num"], ["Lag", "num"], "Owner"],
    group.partitions.map((p) => row(p.topic, num(p.partition), num(p.committed_offset), num(p.high_watermark), num(p.lag),
      h("span", { class: "mono" }, p.owner || (p.error ? p.error : "–")))));
  const topics = [...new Set(group.partitions.map((p) => p.topic))];
  const topic = h("select", {}, topics.map((t) => h("option", { value: t }, t)));
  const to = h("input", { placeholder: "earliest, latest or an offset", value: "earliest" });
  const reset = h("form", {
    class: "inline",
    onsubmit: async (e) => {
      e.preventDefault();
      const target = /^\d+$/.test(to.value.trim()) ? Number(to.value.trim()) : to.value.trim();
      if (await act(`Reset ${id} on ${topic.value} to ${to.value}`, () => post(`/v1/groups/${enc(id)}/offsets`, { topic: topic.value, to: target })) !== undefined) route();
    },
  }, field("Topic", topic), field("To", to), h("button", { type: "submit", class: "secondary" }, "Reset offsets"));
  const remove = deleteButton("group", id, "and its committed offsets", `/v1/groups/${enc(id)}`, "#/groups");
  return h("div", {}, h("h1", {}, `Group ${id}`),
    h("div", { class: "cards" },
      ...[["State", statusPill(group.state)], ["Members", fmtNum(group.members.length)], ["Total lag", fmtNum(group.total_lag)], ["Epoch", fmtNum(group.group_epoch)]]
        .map(([l, v]) => h("div", { class: "card" }, h("div", { class: "label" }, l), h("div", { class: "value", id: l === "Total lag" ? "total-lag" : null }, v)))),
    h("h2", {}, "Lag per partition"), lag, topics.length ? reset : null,
    h("h2", {}, "Members"), members, h("div", { class: "toolbar" }, remove));
}

// Brokers and cluster: state, heartbeats, voters; the operator's actions.

async function clusterPage() {
  const c = await get("/v1/cluster");
  const action = (what, body) => act(what, () => post("/v1/cluster/actions", body)).then((r) => { if (r !== undefined) setTimeout(route, 800); });
  const brokerIds = c.brokers.map((b) => b.node_id);
  const pick = (name) => h("select", { name }, brokerIds.map((id) => h("option", { value: id }, `broker ${id}`)));
  const failFrom = pick("from");
  const backTo = pick("to");
  const decommission = pick("broker");
  const ttTopic = h("input", { placeholder: "topic" });
  const ttPartition = h("input", { type: "number", min: 0, value: "0", style: "width:80px" });
  const ttTo = pick("to");
  const brokers = table(["Broker", "Status", "Client address", "Cluster address", "Rack", ["Led", "num"], ["Hosted", "num"], ["Heartbeat", "num"]],
    c.brokers.map((b) => row(String(b.node_id), h("td", {}, statusPill(b.status), b.drained ? pill("drained", "warn") : null),
      h("span", { class: "mono" }, b.client_address), h("span", { class: "mono" }, b.cluster_address), b.rack || "–",
      num(b.partitions_led), num(b.partitions_hosted), num(b.last_heartbeat_age_ms === null ? null : `${b.last_heartbeat_age_ms} ms ago`))));
  const voters = table(["Voter", "Role", "Address", ["Log behind", "num"]],
    c.voters.map((v) => row(String(v.node_id), statusPill(v.role), h("span", { class: "mono" }, v.cluster_address), num(v.log_lag))));
  return h("div", {}, h("h1", {}, "Brokers & cluster"),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "label" }, "Cluster id"), h("div", { class: "value mono", style: "font-size:13px;word-break:break-all" }, c.cluster_id)),
      h("div", { class: "card" }, h("div", { class: "label" }, "Controller"), h("div", { class: "value" }, c.controller_id === null ? "none" : `broker ${c.controller_id}`)),
      h("div", { class: "card" }, h("div", { class: "label" }, "Offline partitions"), h("div", { class: "value" }, fmtNum(c.offline_partitions.length))),
      h("div", { class: "card" }, h("div", { class: "label" }, "Moves under way"), h("div", { class: "value" }, fmtNum(c.moves.length)))),
    h("h2", {}, "Brokers"), brokers,
    h("h2", {}, "Metadata quorum"), voters,
    h("h2", {}, "Actions"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); action(`Failover from broker ${failFrom.value} asked`, { action: "failover", from: Number(failFrom.value) }); } },
      field("Move every leadership off", failFrom), h("button", { type: "submit" }, "Failover")),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); action(`Failback to broker ${backTo.value} asked`, { action: "failback", to: Number(backTo.value) }); } },
      field("Let lead again", backTo), h("button", { type: "submit", class: "secondary" }, "Failback")),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); action("Leadership transfer asked", { action: "transfer-leader", topic: ttTopic.value, partition: Number(ttPartition.value), to: Number(ttTo.value) }); } },
      field("Topic", ttTopic), field("Partition", ttPartition), field("New leader", ttTo), h("button", { type: "submit", class: "secondary" }, "Transfer leadership")),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); if (confirm(`Move every replica off broker ${decommission.value}?`)) action(`Decommission of broker ${decommission.value} asked`, { action: "decommission", broker: Number(decommission.value) }); } },
      field("Decommission", decommission), h("button", { type: "submit", class: "danger" }, "Decommission")),
    h("p", { class: "muted" }, "A broker joins by starting it with the cluster's --voters; decommission moves its replicas away, then the cluster forgets it once it is stopped."),
    c.offline_partitions.length ? h("div", {}, h("h2", {}, "Offline partitions"), table(["Topic", "Partition"], c.offline_partitions.map((p) => row(p.topic, String(p.partition))))) : null,
    c.moves.length ? h("div", {}, h("h2", {}, "Moves"), table(["Topic", "Partition", "Replicas", "Target"], c.moves.map((m) => row(m.topic, String(m.partition), m.replicas.join(", "), m.target.join(", "))))) : null);
}

// ---- the frame ----------------------------------------------------------

async function health() {
  const badge = document.getElementById("health");
  try {
    await get("/readyz");
    badge.textContent = "ready";
    badge.className = "pill ok";
  } catch (e) {
    badge.textContent = "not ready";
    badge.className = "pill bad";
    badge.title = e.message;
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  route();
  health();
  setInterval(health, 5000);
});
