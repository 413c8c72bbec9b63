// The public API as the page uses it: authentication headers, JSON calls with errors in words,
// and an SSE reader over fetch (EventSource cannot send the headers the API needs).

const BASE = "/v1/chat";

/** Who the page acts as: an API key (kept for this tab only) or a user id (header mode). */
export const auth = {
  get key() {
    return sessionStorage.getItem("aichat.key") || "";
  },
  get user() {
    return localStorage.getItem("aichat.user") || "1";
  },
  set(mode, value) {
    if (mode === "key") {
      sessionStorage.setItem("aichat.key", value);
    } else {
      sessionStorage.removeItem("aichat.key");
      localStorage.setItem("aichat.user", value);
    }
  },
  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    else headers["X-User-ID"] = this.user;
    return headers;
  },
};

/** An API failure: `status`, `code`, and a message a person can act on. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(describe(status, body, retryAfter));
    this.status = status;
    this.code = body.code || "";
    this.path = body.path || "";
  }
}

function describe(status, body, retryAfter) {
  const said = body.error || `HTTP ${status}`;
  if (status === 401) return "Please sign in: the server did not accept who you are.";
  if (status === 429) {
    const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
    return `Too many requests right now (${said}).${wait}`;
  }
  if (status === 503 && body.code === "shutting_down") return "The server is restarting. Try again in a moment.";
  if (status === 503) return "The server cannot serve this right now (its storage or a service is down). Try again shortly.";
  if (status === 502 || status === 504) return `The model provider failed: ${said}`;
  if (status === 409 && body.code === "turn_in_progress") return "This chat is still answering. Wait for it or press Stop.";
  return said;
}

/** Calls the API; resolves with the JSON body, rejects with an `ApiError`. */
export async function call(method, path, body) {
  const options = { method, headers: auth.headers() };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, options);
  } catch {
    throw new ApiError(0, { error: "The server cannot be reached. Check the connection and try again." });
  }
  const text = await response.text();
  let json = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { error: text };
  }
  if (!response.ok) throw new ApiError(response.status, json, response.headers.get("Retry-After"));
  return json;
}

/**
 * Reads a stream's events after `afterSeq` (sent as `Last-Event-ID`) until its terminal event,
 * calling `onEvent({id, event, data})` for each. Resolves when the stream ends; rejects on a
 * failure, with `afterSeq` updated so the caller can resume.
 */
export async function readStream(streamId, afterSeq, onEvent, signal) {
  const headers = auth.headers();
  if (afterSeq > 0) headers["Last-Event-ID"] = String(afterSeq);
  const response = await fetch(`${BASE}/stream/${encodeURIComponent(streamId)}`, { headers, signal });
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      body = {};
    }
    throw new ApiError(response.status, body, response.headers.get("Retry-After"));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseFrame(frame);
      if (event && onEvent(event) === "end") return;
    }
  }
}

function parseFrame(frame) {
  let id = null;
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = Number(value);
    else if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { id, event: name, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}
