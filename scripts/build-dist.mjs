// Compiles src/ to JavaScript with declarations in dist/ (`npm run build`, and `prepack`, so a
// packed lmfactory runs without a TypeScript loader). dist/BUILD.json records the sources'
// fingerprint; a dist/ already built from the same sources is kept (pass --force to rebuild).
// Relative `.ts` imports become `.js` (rewriteRelativeImportExtensions, TypeScript >= 5.7).
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sourceFingerprint } from "../bin/fingerprint.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const staging = join(root, "dist.partial");
const force = process.argv.includes("--force");

function builtFrom(folder) {
  try {
    return JSON.parse(readFileSync(join(folder, "BUILD.json"), "utf8")).sources;
  } catch {
    return null;
  }
}

/** Hand-written declaration files (src/torch/native_ops.d.ts): tsc reads them but does not copy them. */
function copyDeclarations(from, to) {
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (entry.isDirectory()) copyDeclarations(join(from, entry.name), join(to, entry.name));
    else if (entry.name.endsWith(".d.ts")) {
      mkdirSync(to, { recursive: true });
      cpSync(join(from, entry.name), join(to, entry.name));
    }
  }
}

const sources = sourceFingerprint(root);
if (!force && builtFrom(dist) === sources) {
  console.log("build: dist/ is up to date");
  process.exit(0);
}
if (existsSync(dist) && !existsSync(join(dist, "BUILD.json"))) {
  console.error("build: dist/ exists but was not written by this script; move it away first");
  process.exit(1);
}
console.log("build: compiling src/ to dist/");
rmSync(staging, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
try {
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json"), "--outDir", staging], { stdio: "inherit" });
} catch {
  rmSync(staging, { recursive: true, force: true });
  console.error("build: tsc failed");
  process.exit(1);
}
copyDeclarations(join(root, "src"), staging);
// Files the compiled code reads beside itself: the web board's page.
cpSync(join(root, "src", "webui", "static"), join(staging, "webui", "static"), { recursive: true });
const typescript = JSON.parse(readFileSync(createRequire(import.meta.url).resolve("typescript/package.json"), "utf8")).version;
writeFileSync(join(staging, "BUILD.json"), JSON.stringify({ sources, typescript }, null, 2) + "\n");
rmSync(dist, { recursive: true, force: true });
renameSync(staging, dist);
console.log("build: dist/ written");
