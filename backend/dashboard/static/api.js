// Calls to the dashboard's JSON endpoints; the API token (if the server wants one) travels
// as dapr-api-token, like every other client's.
const TOKEN_KEY = "dashboard-api-token";

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(path, params, init = {}) {
  const url = new URL("api/" + path, document.baseURI);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (token()) headers["dapr-api-token"] = token();
  const response = await fetch(url, { ...init, headers });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
  return body;
}

export const api = {
  info: () => call("info"),
  instances: (filters) => call("instances", filters),
  apps: () => call("apps"),
  instance: (app, id) => call("instance", { app, id }),
  history: (app, id, offset, limit) => call("history", { app, id, offset, limit }),
  event: (app, id, seq) => call("event", { app, id, seq }),
  timeline: (app, id) => call("timeline", { app, id }),
  act: (app, id, action, body) => call("action", { app, id, action }, {
    method: "POST", body: JSON.stringify(body || {}), headers: { "Content-Type": "application/json" },
  }),
};
