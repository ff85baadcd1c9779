// The fingerprint of the TypeScript sources (every file under src/, by path and content): the
// compiled dist/ records the one it was built from, and bin/lmf.mjs runs dist/ only when they match.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

function filesUnder(folder, relative, out) {
  for (const entry of readdirSync(join(folder, relative), { withFileTypes: true })) {
    const path = relative ? `${relative}/${entry.name}` : entry.name;
    if (entry.isDirectory()) filesUnder(folder, path, out);
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** sha256 over src/'s files (sorted paths and contents) of the package at `root`. */
export function sourceFingerprint(root) {
  const src = join(root, "src");
  const hash = createHash("sha256");
  for (const path of filesUnder(src, "", []).sort()) {
    hash.update(`${path}\0`);
    hash.update(readFileSync(join(src, path)));
    hash.update("\0");
  }
  return hash.digest("hex");
}
