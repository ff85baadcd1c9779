// PPO's reward model, the three kinds of LLaMA-Factory's `reward_model_type` (train/ppo/trainer.py
// get_rewards, model/loader.py create_reward_model, train/ppo/ppo_utils.py): `lora` — a reward
// adapter trained by stage rm, put in place of the policy's adapter on the same base with its own
// value head; `full` — a separate model folder (with reward_model_adapters merged) and its
// value_head.safetensors, quantized with reward_model_quantization_bit; `api` — POST {"model": "model", "messages": [text]} to a URL, read
// `scores`. A model's score is the value at the last token of query + response.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { type LoraUpdate, loraLayers, patternValue, readLoraConfig, withAdapterSwapped } from "../../model/adapters/index.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import { ValueHead, loadValueHead } from "../../model/value_head.ts";
import type { Tokenizer } from "../../data/tokenizer.ts";
import { type AutocastSpec, Linear, autocastIf, noGrad, openSafetensors, tensor, tidy } from "../../torch/index.ts";
import { loadFrozen } from "./reference.ts";
import type { AttachContext } from "./stage.ts";

export interface RewardModel {
  readonly kind: "lora" | "full" | "api";
  /** The score of each query + response. */
  scores(queries: number[][], responses: number[][]): Promise<number[]>;
  dispose(): void;
}

/** query + response of each row, right-padded with `padTokenId` (TRL's prepare_model_inputs). */
export function rightPadded(queries: number[][], responses: number[][], padTokenId: number): { input_ids: number[][]; attention_mask: number[][] } {
  const rows = queries.map((query, i) => [...query, ...responses[i]!]);
  const width = Math.max(...rows.map((row) => row.length));
  return {
    input_ids: rows.map((row) => [...row, ...new Array<number>(width - row.length).fill(padTokenId)]),
    attention_mask: rows.map((row) => [...new Array<number>(row.length).fill(1), ...new Array<number>(width - row.length).fill(0)]),
  };
}

/** The value head's output at each row's last non-pad token, without autograd (float32). */
export function lastTokenValues(model: CausalLM, head: ValueHead, batch: { input_ids: number[][]; attention_mask: number[][] }, device: string, amp: AutocastSpec | null): number[] {
  return noGrad(() =>
    tidy(() => {
      const ids = tensor(batch.input_ids, { device });
      const padded = batch.attention_mask.some((row) => row.includes(0));
      const hidden = autocastIf(amp, () => model.hiddenStates(ids, { attentionMask: padded ? tensor(batch.attention_mask, { device }) : null }));
      const last = tensor(batch.attention_mask.map((row) => [row.reduce((a, b) => a + b, 0) - 1]), { dtype: "int64", device });
      return head.forward(hidden).gather(1, last).squeeze(1).to("float32").toFlatArray();
    }),
  );
}

/** A value head read from `folder` (value_head.safetensors or .bin), refused when there is none. */
function rewardHead(hiddenSize: number, folder: string, device: string, field: string): ValueHead {
  const head = new ValueHead(hiddenSize).to(device);
  if (!loadValueHead({ v_head: head }, folder)) {
    head.dispose();
    throw new UserError(`the reward model ${folder} has no value_head.safetensors (nor value_head.bin)`, field, "point it at the output_dir of a `stage: rm` run");
  }
  head.eval();
  return head;
}

/** The reward adapter's updates per module (`lora_A`, `lora_B`, scaling), to swap in for the policy's adapter. */
function readRewardAdapter(folder: string, device: string): Map<string, LoraUpdate> {
  const config = readLoraConfig(folder);
  if (config.use_dora) throw new UserError("a DoRA reward adapter cannot be swapped in", "reward_model", "train the reward model without use_dora, or use reward_model_type: full");
  if (config.modules_to_save?.length) throw new UserError("a reward adapter with modules_to_save (additional_target) cannot be swapped in", "reward_model", "use reward_model_type: full");
  const path = join(folder, "adapter_model.safetensors");
  if (!existsSync(path)) throw new UserError("no adapter_model.safetensors found", folder, "point reward_model at the output_dir of a LoRA `stage: rm` run");
  const reader = openSafetensors(path);
  const updates = new Map<string, LoraUpdate>();
  try {
    const prefix = "base_model.model.";
    for (const key of reader.names()) {
      const match = /^(.*)\.lora_A(?:\.default)?\.weight$/.exec(key);
      if (!match) continue;
      const name = match[1]!.startsWith(prefix) ? match[1]!.slice(prefix.length) : match[1]!;
      const bKey = key.replace(".lora_A", ".lora_B");
      if (!reader.names().includes(bKey)) throw new UserError(`${bKey} is missing`, path, "re-save the reward adapter");
      const a = reader.get(key);
      const b = reader.get(bKey);
      const [rank, inFeatures] = a.shape as [number, number];
      const outFeatures = b.shape[0]!;
      const loraA = new Linear(inFeatures, rank, { bias: false, init: "empty", dtype: a.dtype, device });
      const loraB = new Linear(rank, outFeatures, { bias: false, init: "empty", dtype: b.dtype, device });
      noGrad(() => {
        loraA.weight.copy_(a);
        loraB.weight.copy_(b);
      });
      a.dispose();
      b.dispose();
      loraA.eval();
      loraB.eval();
      const r = patternValue(config.rank_pattern, name) ?? config.r;
      const alpha = patternValue(config.alpha_pattern, name) ?? config.lora_alpha;
      updates.set(name, { lora_A: loraA, lora_B: loraB, scaling: config.use_rslora ? alpha / Math.sqrt(r) : alpha / r });
    }
  } finally {
    reader.close();
  }
  if (updates.size === 0) throw new UserError("the reward adapter holds no LoRA weights", path, "point reward_model at the output_dir of a LoRA `stage: rm` run");
  return updates;
}

/** POSTs the texts to the reward API and reads its `scores`, one per text. */
export async function scoresFromServer(url: string, messages: string[]): Promise<number[]> {
  let response: Response;
  try {
    response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "model", messages }) });
  } catch (error) {
    throw new UserError(`the reward API ${url} cannot be reached: ${(error as Error).message}`, "reward_model", "start the reward server, or fix the URL");
  }
  const text = await response.text();
  if (!response.ok) throw new UserError(`the reward API ${url} answered ${response.status}: ${text.slice(0, 200)}`, "reward_model", "check the reward server");
  let scores: unknown;
  try {
    scores = (JSON.parse(text) as { scores?: unknown }).scores;
  } catch {
    throw new UserError(`the reward API ${url} did not answer JSON: ${text.slice(0, 200)}`, "reward_model", 'the server must answer {"scores": [number, ...]}');
  }
  if (!Array.isArray(scores) || scores.length !== messages.length || !scores.every((score) => typeof score === "number" && Number.isFinite(score))) {
    throw new UserError(`the reward API ${url} did not answer ${messages.length} finite scores: ${text.slice(0, 200)}`, "reward_model", 'the server must answer {"scores": [number, ...]}, one per message');
  }
  return scores as number[];
}

/** The reward model of a PPO run (see the file comment). `policy` is the trained model; `padTokenId` pads the scored batches. */
export function createRewardModel(context: AttachContext, policy: CausalLM, tokenizer: Tokenizer, padTokenId: number, amp: AutocastSpec | null): RewardModel {
  const { args, device, print } = context;
  const { reward_model: source, reward_model_type: kind, reward_model_adapters: adapters } = args.finetuning;
  if (!source) throw new UserError("PPO training needs `reward_model`", "reward_model", "set reward_model");
  if (kind === "api") {
    print(`reward model: the API at ${source}`);
    return {
      kind,
      scores: (queries, responses) => scoresFromServer(source, queries.map((query, i) => tokenizer.decode([...query, ...responses[i]!], { skipSpecialTokens: false }))),
      dispose: () => {},
    };
  }
  const hiddenSize = policy.config.hidden_size;
  if (kind === "lora") {
    const updates = readRewardAdapter(source, device);
    // Checked now rather than at the first score: the swap itself refuses modules the policy's adapter lacks.
    const policyLayers = new Set(loraLayers(policy).map(([name]) => name));
    const outside = [...updates.keys()].filter((name) => !policyLayers.has(name));
    if (outside.length) {
      throw new UserError(
        `the reward adapter targets ${outside.length} module(s) the trained LoRA adapter does not (${outside.slice(0, 3).join(", ")})`,
        "lora_target",
        "train the policy's LoRA on at least the reward adapter's modules (lora_target: all covers any)",
      );
    }
    const head = rewardHead(hiddenSize, source, device, "reward_model");
    print(`reward model: the LoRA adapter ${source} swapped onto the trained model's base, with its value head`);
    return {
      kind,
      scores: async (queries, responses) => withAdapterSwapped(policy, updates, () => lastTokenValues(policy, head, rightPadded(queries, responses, padTokenId), device, amp)),
      dispose: () => {
        head.dispose();
        for (const update of updates.values()) {
          update.lora_A.dispose();
          update.lora_B.dispose();
        }
      },
    };
  }
  // LLaMA-Factory's create_reward_model: the run's model arguments with quantization_bit = reward_model_quantization_bit.
  const bits = args.finetuning.reward_model_quantization_bit;
  const model = loadFrozen(context, source, adapters, bits);
  model.eval();
  let head: ValueHead;
  try {
    head = rewardHead(hiddenSize, adapters?.at(-1) ?? source, device, adapters?.length ? "reward_model_adapters" : "reward_model");
  } catch (error) {
    model.dispose();
    throw error;
  }
  print(`reward model: ${source}${adapters?.length ? ` with adapters ${adapters.join(", ")}` : ""} (frozen${bits ? `, ${bits}-bit` : ""}), with its value head`);
  return {
    kind,
    scores: async (queries, responses) => lastTokenValues(model, head, rightPadded(queries, responses, padTokenId), device, amp),
    dispose: () => {
      head.dispose();
      model.dispose();
    },
  };
}
