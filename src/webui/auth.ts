// Where the web board listens and who may use it. Host and port come from flags, else from
// LLaMA-Factory's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860. Off loopback a
// token is required (given, or made and printed at start): every request without it gets 401. On
// loopback the Host header must name loopback (a web page cannot reach the board through DNS
// rebinding), and every POST must be a same-origin JSON request (no cross-site form posts).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import { UserError } from "../errors.ts";
import { HttpError } from "./http.ts";

export interface ServingFlags {
  host?: string;
  port?: string;
  token?: string;
}

export interface Serving {
  host: string;
  port: number;
  /** Null: no token needed (loopback without --token). */
  token: string | null;
  /** True when lmfactory made the token (it is printed at start). */
  tokenGenerated: boolean;
}

export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_PORT = 7860;
const MIN_TOKEN_LENGTH = 8;

const LOOPBACK_NAMES = new Set(["localhost", "::1", "[::1]"]);

export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (LOOPBACK_NAMES.has(bare)) return true;
  return isIP(bare) === 4 && bare.startsWith("127.");
}

function parsePort(text: string, where: string): number {
  const port = Number(text);
  if (text.trim() === "" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UserError(`the port must be a whole number from 0 to 65535, got ${JSON.stringify(text)}`, where, "e.g. --port 7860 (0 picks a free port)");
  }
  return port;
}

/** Flags first, then the environment (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, LMF_WEBUI_TOKEN), then the defaults. */
export function resolveServing(flags: ServingFlags, env: NodeJS.ProcessEnv = process.env): Serving {
  const host = flags.host ?? (env.GRADIO_SERVER_NAME || DEFAULT_HOST);
  const port =
    flags.port !== undefined ? parsePort(flags.port, "--port") : env.GRADIO_SERVER_PORT ? parsePort(env.GRADIO_SERVER_PORT, "GRADIO_SERVER_PORT") : DEFAULT_PORT;
  const given = flags.token ?? (env.LMF_WEBUI_TOKEN || undefined);
  if (given !== undefined && given.length < MIN_TOKEN_LENGTH) {
    throw new UserError(`the token must be at least ${MIN_TOKEN_LENGTH} characters long`, flags.token !== undefined ? "--token" : "LMF_WEBUI_TOKEN", "give a longer token, or none to have one made");
  }
  if (given !== undefined) return { host, port, token: given, tokenGenerated: false };
  if (isLoopback(host)) return { host, port, token: null, tokenGenerated: false };
  return { host, port, token: randomBytes(18).toString("base64url"), tokenGenerated: true };
}

const sha256 = (text: string): Buffer => createHash("sha256").update(text).digest();

function sameToken(given: string, token: string): boolean {
  // Hashing first gives equal lengths, so the comparison takes the same time for every wrong token.
  return timingSafeEqual(sha256(given), sha256(token));
}

/** The cookie that carries the token after the first visit; named per port, as cookies ignore ports. */
export const tokenCookie = (port: number): string => `lmf_webui_token_${port}`;

function cookieValue(req: IncomingMessage, name: string): string | null {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export type Access = "ok" | "set-cookie";

/**
 * Checks one request: its token (Authorization: Bearer, the cookie, or ?token= which the page
 * then keeps as a cookie), its Host on loopback, and for POST its origin and JSON content type.
 */
export function checkRequest(req: IncomingMessage, url: URL, serving: Serving, boundPort: number): Access {
  const hostHeader = req.headers.host ?? "";
  if (isLoopback(serving.host)) {
    const hostname = hostHeader.replace(/:\d+$/, "");
    if (!isLoopback(hostname)) throw new HttpError(403, `This board listens on ${serving.host} and answers only requests addressed to it (Host: ${hostHeader || "none"}).`);
  }
  let access: Access = "ok";
  if (serving.token) {
    const header = req.headers.authorization ?? "";
    const bearer = header.startsWith("Bearer ") ? header.slice(7).trim() : null;
    const query = url.searchParams.get("token");
    const cookie = cookieValue(req, tokenCookie(boundPort));
    const matches = [bearer, cookie, query].some((candidate) => candidate !== null && sameToken(candidate, serving.token!));
    if (!matches) throw new HttpError(401, "This board needs its token: open the address printed when `lmf webui` started (it ends in ?token=...).");
    if (query !== null && cookie === null) access = "set-cookie";
  }
  if (req.method === "POST") {
    const origin = req.headers.origin;
    if (origin && origin !== `http://${hostHeader}`) throw new HttpError(403, `Requests from ${origin} are refused.`);
    if (!(req.headers["content-type"] ?? "").startsWith("application/json")) throw new HttpError(415, "POST requests must send JSON (Content-Type: application/json).");
  }
  return access;
}
