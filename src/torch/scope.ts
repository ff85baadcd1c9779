// Tensor lifetimes: `tidy(fn)` frees what `fn` made except what it returns or `keep()`s, and a
// FinalizationRegistry only counts handles garbage-collected without `dispose()` (leaks); it never
// frees. Tensors register here when made and leave when disposed (src/torch/tensor.ts).
import { native } from "./native.ts";


/** What a scope tracks: a tensor (anything with dispose, created through `track`). */
interface Tracked {
  dispose(): void;
}

const scopes: Set<Tracked>[] = [];
/** Every tracked object, so results are recognised without importing the Tensor class. */
const handles = new WeakSet<object>();
let leakedHandles = 0;
const leakRegistry = new FinalizationRegistry<number>(() => {
  leakedHandles += 1;
});

/** A new tensor joins the innermost scope; a collected, undisposed one is counted as a leak. */
export function track(tensor: Tracked, id: number): void {
  handles.add(tensor);
  scopes[scopes.length - 1]?.add(tensor);
  leakRegistry.register(tensor, id, tensor);
}

/** A disposed tensor leaves its scope and the leak count's watch. */
export function untrack(tensor: Tracked): void {
  leakRegistry.unregister(tensor);
  for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i]!.delete(tensor)) break;
}

/** Runs `fn`, then frees every tensor created inside it except those in its result or kept. */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tracked>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    // A failed block still frees what it made: an error is never a leak.
    for (const tensor of scope) tensor.dispose();
    throw error;
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error("tidy: fn must be synchronous (use tidyAsync)");
  return release(scope, result);
}

/** Frees what a finished scope made, except the tensors in `result`, which move to the parent scope. */
function release<T>(scope: Set<Tracked>, result: T): T {
  const survivors = new Set<Tracked>();
  collectTensors(result, survivors);
  const parent = scopes[scopes.length - 1];
  for (const tensor of scope) {
    if (survivors.has(tensor)) parent?.add(tensor);
    else tensor.dispose();
  }
  return result;
}

/** `tidy` for async work: tensors made while `fn` runs (including across awaits) are tracked. */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Set<Tracked>();
  scopes.push(scope);
  let result: T;
  try {
    result = await fn();
  } catch (error) {
    for (const tensor of scope) tensor.dispose();
    throw error;
  } finally {
    scopes.splice(scopes.lastIndexOf(scope), 1);
  }
  return release(scope, result);
}

/** Takes a tensor out of every enclosing `tidy`: it lives until `dispose()`. */
export function keep<T extends Tracked>(tensor: T): T {
  for (const scope of scopes) scope.delete(tensor);
  return tensor;
}

function collectTensors(value: unknown, out: Set<Tracked>, depth = 0): void {
  if (depth > 6 || value === null || typeof value !== "object") return;
  if (handles.has(value)) {
    out.add(value as Tracked);
  } else if (Array.isArray(value)) {
    for (const item of value) collectTensors(item, out, depth + 1);
  } else if (value instanceof Map) {
    for (const item of value.values()) collectTensors(item, out, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) collectTensors(item, out, depth + 1);
  }
}

/** Tensors alive in the engine right now (disposed ones excluded). */
export function liveTensors(): number {
  return native.live_count();
}

/** Tensors that were garbage-collected by JavaScript without `dispose()`: each is a leak. */
export function leakedTensors(): number {
  return leakedHandles;
}
