// @ts-check
// The page's calls to the board's JSON API (src/webui/server.ts): same origin, JSON in and out; an
// answer other than 2xx becomes an ApiFailure carrying the board's message and per-field errors.

export class ApiFailure extends Error {
  /**
   * @param {number} status
   * @param {{ error?: string, errors?: Record<string, string>, message?: string | null }} body
   */
  constructor(status, body) {
    super(body.error ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** @param {Response} response */
async function parse(response) {
  const text = await response.text();
  /** @type {any} */
  let body = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { error: text };
  }
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

/** @param {string} path @returns {Promise<any>} */
export async function getJson(path) {
  return parse(await fetch(path, { headers: { accept: "application/json" } }));
}

/** @param {string} path @param {unknown} body @returns {Promise<any>} */
export async function postJson(path, body = {}) {
  return parse(await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }));
}

/**
 * A POST whose answer is JSON lines, each handed to `onLine` as it arrives.
 * @param {string} path
 * @param {unknown} body
 * @param {(line: any) => void} onLine
 * @param {AbortSignal} signal
 */
export async function postStream(path, body, onLine, signal) {
  const response = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });
  if (!response.ok || !response.body) return void (await parse(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, end).trim();
      pending = pending.slice(end + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}
