// Which modules LoRA wraps, as LLaMA-Factory's `model/adapter.py` and `find_all_linear_modules`
// choose them: `all` (every Linear but the output heads), name suffixes, or a PEFT regex.
import type { Module } from "../../torch/index.ts";
import { isLoraBase } from "./lora_layer.ts";

/** Heads LLaMA-Factory's find_all_linear_modules never targets (output layers of various families). */
const OUTPUT_HEADS = new Set(["lm_head", "output_layer", "output"]);

/**
 * LLaMA-Factory's find_all_linear_modules: the last name component of every Linear in the model,
 * output heads excepted (tiny Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).
 */
export function findAllLinearModules(model: Module): string[] {
  const names = new Set<string>();
  for (const [name, module] of model.namedModules()) {
    if (!isLoraBase(module)) continue;
    const last = name.split(".").pop()!;
    if (OUTPUT_HEADS.has(last)) continue;
    names.add(last);
  }
  return [...names];
}

/**
 * PEFT's check_target_module_exists: a list entry matches a module named exactly so or ending in
 * ".entry"; a single string is a regular expression that must match the whole name.
 */
export function matchesTarget(moduleName: string, targets: string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(moduleName);
  return targets.some((target) => moduleName === target || moduleName.endsWith(`.${target}`));
}

/** PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name's dotted tail. */
export function patternValue(pattern: Record<string, number> | undefined, moduleName: string): number | undefined {
  for (const [key, value] of Object.entries(pattern ?? {})) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(moduleName)) return value;
  }
  return undefined;
}

export function linearNames(model: Module): string[] {
  return model
    .namedModules()
    .filter(([, module]) => isLoraBase(module))
    .map(([name]) => name);
}
