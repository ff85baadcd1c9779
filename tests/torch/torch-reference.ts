// Runs tests/reference/torch_reference.py under the system python3 (which has python3-torch) with a
// JSON request on stdin and returns its JSON answer; `hasTorch` tells the tests whether to skip.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const PYTHON = "/usr/bin/python3";
const SCRIPT = fileURLToPath(new URL("../reference/torch_reference.py", import.meta.url));

export const hasTorch: boolean = (() => {
  try {
    execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

export function torchReference<T>(request: object): T {
  const output = execFileSync(PYTHON, [SCRIPT], { input: JSON.stringify(request), encoding: "utf8", maxBuffer: 64 << 20 });
  return JSON.parse(output) as T;
}

/** Asserts |actual - expected| <= rtol * |expected| + atol elementwise. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-6, atol = 1e-7, what = "value"): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= rtol * Math.abs(e) + atol)) {
      throw new Error(`${what}[${i}]: got ${a}, expected ${e} (diff ${Math.abs(a - e)})`);
    }
  }
}
