// The web board's HTTP plumbing: an error with a status, JSON answers, and request bodies read up
// to a size limit (a larger one is a 413 before it is parsed). Plain `node:http`, as `lmf api`.
import type { IncomingMessage, ServerResponse } from "node:http";

/** An answer other than 200: `{ error: message, field?, fields? }` with its status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Headers every answer carries: no caching of live data, and the page may only load its own scripts. */
export const COMMON_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
};

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...COMMON_HEADERS, ...headers, "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** The JSON body of a POST, at most `limit` bytes; a larger one is read to its end and answered 413. */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers["content-length"]) > limit) {
      req.resume();
      reject(new HttpError(413, `The request body is larger than ${limit} bytes.`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let oversized = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) oversized = true;
      else chunks.push(chunk);
    });
    req.on("error", () => undefined);
    req.once("end", () => {
      if (oversized) return reject(new HttpError(413, `The request body is larger than ${limit} bytes.`));
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
      } catch {
        return reject(new HttpError(400, "The request body is not valid JSON."));
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return reject(new HttpError(400, "The request body must be a JSON object."));
      resolve(parsed as Record<string, unknown>);
    });
  });
}

/** A string member of a request body, or a 400 naming it. */
export function stringField(body: Record<string, unknown>, name: string, pattern?: RegExp): string {
  const value = body[name];
  if (typeof value !== "string" || (pattern && !pattern.test(value))) throw new HttpError(400, `'${name}' must be ${pattern ? `a string matching ${pattern}` : "a string"}.`);
  return value;
}

/** An object member of a request body (form values), or a 400 naming it. */
export function objectField(body: Record<string, unknown>, name: string): Record<string, unknown> {
  const value = body[name] ?? {};
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new HttpError(400, `'${name}' must be an object.`);
  return value as Record<string, unknown>;
}

/** A whole-number member within [min, max], or its default when absent. */
export function intField(body: Record<string, unknown>, name: string, fallback: number, min: number, max: number): number {
  const value = body[name] ?? fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new HttpError(400, `'${name}' must be a whole number from ${min} to ${max}.`);
  }
  return value;
}
