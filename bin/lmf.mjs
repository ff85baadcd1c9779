#!/usr/bin/env node
// The `lmf` executable: registers the TypeScript loader (tsx), then runs the CLI in src/cli.ts.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli.ts");
process.exitCode = await main(process.argv);
