// The dashboard's pages: instances (filters, paging, counts, auto-refresh), one instance
// (state, timeline, history, actions) and apps (workers, waiting work). Hash routes, no build.
import { api, ApiError, token, setToken } from "./api.js";
import { h, when, duration, statusBadge, instanceHref, pretty } from "./util.js";
import { Timeline } from "./timeline.js";

const view = document.getElementById("view");
const REFRESH_MS = 5000;
let info = { apps: [], actions: false, statuses: [] };
let cleanup = () => {};

function message(text, kind = "error") {
  return h("div", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

function showError(err) {
  const text = err instanceof ApiError && err.status === 401
    ? "The server wants an API token: press Token and enter it." : String(err.message || err);
  view.replaceChildren(message(text));
}

// -- instances --------------------------------------------------------------------------

function filtersFromHash(query) {
  const p = new URLSearchParams(query);
  return { app: p.get("app") || "", status: p.get("status") || "", name: p.get("name") || "",
    prefix: p.get("prefix") || "", age: p.get("age") || "", size: p.get("size") || "" };
}

function hashOf(filters) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) p.set(k, v);
  const q = p.toString();
  return q ? `#/?${q}` : "#/";
}

async function instancesPage(query) {
  const filters = filtersFromHash(query);
  const pages = [""];  // page tokens seen: keyset paging goes forward, this goes back
  let auto = sessionStorage.getItem("dashboard-auto") !== "off";
  let timer = null;

  const field = (label, input) => h("label", {}, label, input);
  const appSel = h("select", { name: "app" }, h("option", { value: "" }, "all apps"),
    ...info.apps.map((a) => h("option", { value: a, selected: a === filters.app }, a)));
  const statusSel = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    ...info.statuses.map((s) => h("option", { value: s, selected: s === filters.status }, s)));
  const nameIn = h("input", { name: "name", value: filters.name, placeholder: "exact name" });
  const prefixIn = h("input", { name: "prefix", value: filters.prefix, placeholder: "ID prefix" });
  const ageSel = h("select", { name: "age" }, ...[["", "any time"], ["15m", "last 15 min"], ["1h", "last hour"],
    ["24h", "last 24 h"], ["7d", "last 7 days"]].map(([v, t]) => h("option", { value: v, selected: v === filters.age }, t)));
  const autoBox = h("input", { type: "checkbox", name: "auto", checked: auto });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    location.hash = hashOf({ app: appSel.value, status: statusSel.value, name: nameIn.value.trim(),
      prefix: prefixIn.value.trim(), age: ageSel.value, size: filters.size });
  } }, field("App", appSel), field("Status", statusSel), field("Workflow name", nameIn),
  field("Instance ID", prefixIn), field("Created", ageSel), h("button", { class: "primary", type: "submit" }, "Filter"),
  h("label", { class: "auto" }, h("span", {}, "auto-refresh"), autoBox));

  const counts = h("div", { class: "counts", "data-testid": "counts" });
  const body = h("tbody");
  const pageLabel = h("span", { class: "muted", "data-testid": "page-label" });
  const prev = h("button", { type: "button", "data-testid": "prev" }, "Previous");
  const next = h("button", { type: "button", "data-testid": "next" }, "Next");
  const status = h("div");
  view.replaceChildren(h("h1", {}, "Instances"), h("div", { class: "card" }, form, counts), status,
    h("table", { "data-testid": "instances" }, h("thead", {}, h("tr", {}, ...["Instance ID", "App", "Workflow", "Status",
      "Created", "Updated", "Parent"].map((t) => h("th", {}, t)))), body),
    h("div", { class: "pager" }, prev, next, pageLabel));

  let nextToken = null;
  async function load() {
    const token = pages[pages.length - 1];
    let data;
    try {
      data = await api.instances({ ...filters, page: token });
    } catch (err) { status.replaceChildren(message(err.message)); return; }
    status.replaceChildren();
    nextToken = data.next;
    counts.replaceChildren(...Object.entries(data.counts).sort().map(([s, n]) =>
      h("span", { class: `chip${filters.status === s ? " on" : ""}`, "data-count-status": s, onclick: () => {
        location.hash = hashOf({ ...filters, status: filters.status === s ? "" : s });
      } }, statusBadge(s), h("b", {}, n.toLocaleString("en-US")))));
    const all = Object.values(data.counts).reduce((a, b) => a + b, 0);
    counts.prepend(h("span", { class: "chip", "data-count-status": "ALL" }, "all", h("b", {}, all.toLocaleString("en-US"))));
    body.replaceChildren(...data.instances.map((i) => h("tr", { "data-instance": i.id, "data-app": i.app },
      h("td", { class: "mono" }, h("a", { href: instanceHref(i.app, i.id) }, i.id)),
      h("td", {}, i.app), h("td", {}, i.name), h("td", {}, statusBadge(i.status)),
      h("td", { class: "mono" }, when(i.created)), h("td", { class: "mono" }, when(i.updated)),
      h("td", { class: "mono" }, i.parent ? h("a", { href: instanceHref(i.parent.app, i.parent.id) }, `${i.parent.app}/${i.parent.id}`) : ""))));
    if (!data.instances.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "nothing matches")));
    pageLabel.textContent = `page ${pages.length}, ${data.instances.length} shown`;
    prev.disabled = pages.length <= 1;
    next.disabled = !nextToken;
  }
  prev.addEventListener("click", () => { if (pages.length > 1) { pages.pop(); load(); } });
  next.addEventListener("click", () => { if (nextToken) { pages.push(nextToken); load(); } });
  const arm = () => {
    clearInterval(timer);
    timer = auto ? setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS) : null;
  };
  autoBox.addEventListener("change", () => {
    auto = autoBox.checked;
    sessionStorage.setItem("dashboard-auto", auto ? "on" : "off");
    arm();
  });
  await load();
  arm();
  return () => clearInterval(timer);
}

// -- one instance -------------------------------------------------------------------------

function payload(title, text) {
  if (text === undefined || text === null) return null;
  return h("div", {}, h("h2", {}, title), h("pre", { class: "card", "data-testid": `payload-${title.toLowerCase().replace(/ /g, "-")}` }, pretty(text)));
}

function failureBlock(f) {
  if (!f) return null;
  const chain = [];
  for (let x = f; x; x = x.inner) chain.push(x);
  return h("div", { class: "card failure", "data-testid": "failure" }, h("h2", {}, "Failure"),
    ...chain.map((x, n) => h("div", {}, h("b", {}, `${n ? "caused by " : ""}${x.errorType}: `), x.errorMessage,
      x.nonRetriable ? h("span", { class: "muted" }, " (non-retriable)") : null,
      x.stackTrace ? h("pre", {}, x.stackTrace) : null)));
}

function actionBar(app, id, state, reload) {
  if (!info.actions) return h("div", { class: "muted", "data-testid": "read-only" }, "Read-only (start the server with --dashboard-actions to act on instances).");
  const out = h("div");
  const run = async (action, body, confirmText) => {
    if (confirmText && !window.confirm(confirmText)) return;
    try {
      const result = await api.act(app, id, action, body);
      out.replaceChildren(message(`${action}: done`, "ok"));
      if (action === "purge") { location.hash = "#/"; return; }
      if (action === "rerun" && result.instance) { location.hash = instanceHref(result.instance.app, result.instance.id); return; }
      reload();
    } catch (err) { out.replaceChildren(message(`${action}: ${err.message}`)); }
  };
  const evName = h("input", { placeholder: "event name", "data-testid": "event-name" });
  const evData = h("input", { placeholder: "event data (JSON)", "data-testid": "event-data" });
  const button = (label, fn) => h("button", { type: "button", "data-action": label, onclick: fn }, label);
  return h("div", { class: "card" }, h("div", { class: "actions", "data-testid": "actions" },
    button("terminate", () => run("terminate", {}, `Terminate ${id}?`)),
    button("suspend", () => run("suspend", {})),
    button("resume", () => run("resume", {})),
    button("purge", () => run("purge", {}, `Purge ${id} and its history?`)),
    button("rerun", () => run("rerun", {}, `Run ${id} again as a new instance, from its first task?`)),
    evName, evData, button("raise", () => run("raise", { name: evName.value, data: evData.value }))), out);
}

const RERUNNABLE = new Set(["taskScheduled", "childWorkflowInstanceCreated", "timerCreated"]);

async function rerunFrom(app, id, eventId) {
  if (!window.confirm(`Run ${id} again as a new instance, from event ${eventId}?`)) return;
  try {
    const result = await api.act(app, id, "rerun", { eventId });
    location.hash = instanceHref(result.instance.app, result.instance.id);
  } catch (err) { window.alert(`rerun: ${err.message}`); }
}

async function historyTable(app, id, total) {
  const PAGE = 200;
  let offset = 0;
  const body = h("tbody");
  const label = h("span", { class: "muted" });
  const prev = h("button", { type: "button" }, "Previous");
  const next = h("button", { type: "button", "data-testid": "history-next" }, "Next");
  async function load() {
    const data = await api.history(app, id, offset, PAGE);
    total = data.total;
    body.replaceChildren(...data.events.flatMap((e) => {
      const row = h("tr", { class: "event", "data-seq": e.seq, "data-type": e.type, "data-app": e.app },
        h("td", { class: "mono" }, e.eventId), h("td", {}, e.type), h("td", {}, e.name || ""),
        h("td", { class: "mono" }, when(e.time)), h("td", {}, e.app), h("td", {}, e.route || ""),
        h("td", { class: "mono" }, e.failure ? `${e.failure.errorType}: ${e.failure.errorMessage}` : (e.payload ?? "") + (e.truncated ? "…" : "")),
        h("td", {}, e.child ? h("a", { href: instanceHref(e.child.app, e.child.id), onclick: (ev) => ev.stopPropagation() }, `${e.child.app}/${e.child.id}`) : "",
          info.actions && RERUNNABLE.has(e.type) ? h("button", { type: "button", "data-rerun": e.eventId, title: "rerun as a new instance from this event",
            onclick: (ev) => { ev.stopPropagation(); rerunFrom(app, id, e.eventId); } }, "rerun from here") : ""));
      row.addEventListener("click", async () => {
        const open = row.nextElementSibling && row.nextElementSibling.classList.contains("detail");
        if (open) { row.nextElementSibling.remove(); return; }
        const full = await api.event(app, id, e.seq);
        row.after(h("tr", { class: "detail" }, h("td", { colspan: 8 }, h("pre", {}, JSON.stringify(full.event, null, 2)))));
      });
      return [row];
    }));
    label.textContent = `events ${offset + 1}-${offset + data.events.length} of ${total}`;
    prev.disabled = offset === 0;
    next.disabled = offset + PAGE >= total;
  }
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  next.addEventListener("click", () => { offset += PAGE; load(); });
  await load();
  return h("div", {}, h("table", { "data-testid": "history" }, h("thead", {}, h("tr", {},
    ...["#", "Event", "Name", "Time", "App", "Route", "Payload", "Link"].map((t) => h("th", {}, t)))), body),
  h("div", { class: "pager" }, prev, next, label));
}

async function instancePage(app, id) {
  let timeline = null;
  async function render() {
    const state = await api.instance(app, id);
    const links = [];
    if (state.parent) links.push(h("div", {}, "parent: ", h("a", { href: instanceHref(state.parent.app, state.parent.id), "data-testid": "parent-link" }, `${state.parent.app}/${state.parent.id}`)));
    if (state.children.length) links.push(h("div", { "data-testid": "children" }, "children: ",
      ...state.children.flatMap((c, n) => [n ? ", " : "", h("a", { href: instanceHref(c.app, c.id) }, `${c.app}/${c.id}`),
        c.route ? h("span", { class: "muted" }, ` (${c.route})`) : ""]),
      state.childrenTotal > state.children.length ? h("span", { class: "muted" }, ` and ${state.childrenTotal - state.children.length} more (see the timeline)`) : ""));
    const head = h("div", { class: "card" }, h("dl", { class: "grid" },
      h("dt", {}, "status"), h("dd", { "data-testid": "instance-status" }, statusBadge(state.status)),
      h("dt", {}, "app"), h("dd", {}, state.app), h("dt", {}, "workflow"), h("dd", {}, state.name),
      h("dt", {}, "created"), h("dd", { class: "mono" }, when(state.created)),
      h("dt", {}, "updated"), h("dd", { class: "mono" }, when(state.updated)),
      state.completed ? [h("dt", {}, "completed"), h("dd", { class: "mono" }, `${when(state.completed)} (${duration(state.completed - state.created)})`)] : [],
      state.version ? [h("dt", {}, "version"), h("dd", {}, state.version)] : [],
      h("dt", {}, "events"), h("dd", {}, state.historyLength)), ...links);
    const tdata = await api.timeline(app, id);
    if (timeline) timeline.destroy();
    timeline = new Timeline(tdata);
    const table = await historyTable(app, id, state.historyLength);
    view.replaceChildren(...[h("h1", { class: "mono" }, `${app} / ${id}`), head, actionBar(app, id, state, render),
      failureBlock(state.failure), payload("Input", state.input), payload("Output", state.output),
      payload("Custom status", state.customStatus),
      h("h2", {}, `Timeline (${tdata.bars.length} bars)`), timeline.element(), h("h2", {}, "History"), table].filter(Boolean));
    timeline.schedule();
    window.dashboardTimeline = timeline;  // for people poking at the page (and the browser tests)
    document.body.dataset.ready = `/instance/${app}/${id}`;
  }
  await render();
  return () => { if (timeline) timeline.destroy(); };
}

// -- apps -----------------------------------------------------------------------------------

async function appsPage() {
  const data = await api.apps();
  view.replaceChildren(h("h1", {}, "Apps"), h("table", { "data-testid": "apps" },
    h("thead", {}, h("tr", {}, ...["App", "Served here", "Workers", "Waiting", "Waiting with no worker", "Oldest wait", "Instances"].map((t) => h("th", {}, t)))),
    h("tbody", {}, ...data.apps.map((a) => h("tr", { "data-app": a.app },
      h("td", {}, h("a", { href: hashOf({ app: a.app }) }, a.app)), h("td", {}, a.served ? "yes" : "no"),
      h("td", { "data-col": "workers" }, a.workers), h("td", { "data-col": "waiting" }, a.waiting),
      h("td", { "data-col": "waiting-without-worker", class: a.waitingWithoutWorker ? "failure" : "" }, a.waitingWithoutWorker),
      h("td", {}, a.oldestWaitingSeconds === null ? "" : duration(a.oldestWaitingSeconds * 1000)),
      h("td", {}, Object.entries(a.instances).map(([s, n]) => `${s} ${n}`).join(", ")))))));
}

// -- routing ------------------------------------------------------------------------------

async function route() {
  cleanup();
  cleanup = () => {};
  const hash = location.hash.slice(1) || "/";
  const [path, query] = hash.split("?");
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active",
    (a.dataset.nav === "apps") === path.startsWith("/apps"));
  try {
    if (path.startsWith("/instance/")) {
      const [, , app, id] = path.split("/");
      cleanup = await instancePage(decodeURIComponent(app), decodeURIComponent(id));
    } else if (path.startsWith("/apps")) {
      await appsPage();
    } else {
      cleanup = await instancesPage(query || "");
    }
    document.body.dataset.ready = decodeURIComponent(path);
  } catch (err) { showError(err); document.body.dataset.ready = "error"; }
}

document.getElementById("token-button").addEventListener("click", () => {
  const value = window.prompt("API token (sent as dapr-api-token; kept for this tab only)", token());
  if (value !== null) { setToken(value.trim()); boot(); }
});

async function boot() {
  try { info = await api.info(); } catch (err) { showError(err); document.body.dataset.ready = "error"; return; }
  document.getElementById("mode").textContent = info.actions ? "actions enabled" : "read-only";
  window.removeEventListener("hashchange", route);
  window.addEventListener("hashchange", route);
  await route();
}

boot();
