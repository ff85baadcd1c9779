// Shared by the GGUF tests that run llama.cpp (through node-llama-cpp, CPU): loading the library,
// randomising 1-D parameters, our next-token probabilities, and llama.cpp's greedy continuation
// with the full next-token distribution at every step.
import { generate } from "../../src/model/generation.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import { manualSeed, noGrad, randn, tensor, tidy } from "../../src/torch/index.ts";

export type NodeLlamaCpp = typeof import("node-llama-cpp");
export type Llama = Awaited<ReturnType<NodeLlamaCpp["getLlama"]>>;

/** node-llama-cpp's CPU build, or why it cannot load here. */
export async function loadLlamaCpp(): Promise<{ nlc: NodeLlamaCpp; llama: Llama } | { unavailable: string }> {
  try {
    const nlc = await import("node-llama-cpp");
    const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
    return { nlc, llama };
  } catch (error) {
    return { unavailable: `node-llama-cpp cannot load on this machine: ${(error as Error).message.split("\n")[0]}` };
  }
}

/** Norm weights and biases start at 1 (Gemma: 0) and 0 under HF init; random values make them count. */
export function randomizeVectors(model: CausalLM, seed: number, normOffset = 1): void {
  manualSeed(seed);
  const updates = Object.fromEntries(
    model
      .namedParameters()
      .filter(([, p]) => p.ndim === 1)
      .map(([name, p]) => [name, tidy(() => randn([p.shape[0]!]).mul(0.3).add(name.endsWith("norm.weight") ? normOffset : 0))]),
  );
  model.loadStateDict(updates, { strict: false });
  for (const t of Object.values(updates)) t.dispose();
}

export function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Our next-token probabilities after `ids` (one full forward, float32). */
export function ourProbabilities(model: CausalLM, ids: number[]): number[] {
  const logits = tidy(() => noGrad(() => model.forward(tensor([ids])).select(1, ids.length - 1).select(0, 0).to("float32").toFlatArray()));
  return softmax(logits);
}

/** llama.cpp's greedy continuation with the full next-token distribution at every step. */
export async function llamaCppGreedy(llama: Llama, modelPath: string, vocabSize: number, prompt: number[], steps: number, kvType: "F32" | "F16", threads = 2) {
  type Token = import("node-llama-cpp").Token;
  type Item = import("node-llama-cpp").ControlledEvaluateInputItem;
  const llamaModel = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await llamaModel.createContext({
    contextSize: 64,
    batchSize: 64,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: kvType,
    experimentalKvCacheValueType: kvType,
  });
  try {
    const sequence = context.getSequence();
    const next = { generateNext: { token: true, probabilities: true } } as const;
    let input: Item[] = [...prompt.slice(0, -1).map((id) => id as Token), [prompt.at(-1)! as Token, next]];
    const tokens: number[] = [];
    const distributions: number[][] = [];
    for (let step = 0; step < steps; step++) {
      const result = (await sequence.controlledEvaluate(input)).at(-1)!.next;
      const distribution = new Array<number>(vocabSize).fill(0);
      for (const [token, probability] of result.probabilities!) distribution[token] = probability;
      distributions.push(distribution);
      tokens.push(result.token!);
      input = [[result.token!, next]];
    }
    return { tokens, distributions };
  } finally {
    await context.dispose();
    await llamaModel.dispose();
  }
}

/**
 * Our greedy continuation of `prompt` and, along it, the largest |p_ours - p_llama.cpp| over every
 * step and token, with llama.cpp's own greedy tokens.
 */
export async function compareWithLlamaCpp(llama: Llama, model: CausalLM, modelPath: string, prompt: number[], steps: number, kvType: "F32" | "F16") {
  const ours = generate(model, [prompt], { maxNewTokens: steps, doSample: false, eosTokenId: [] }).sequences[0]!;
  const theirs = await llamaCppGreedy(llama, modelPath, model.config.vocab_size, prompt, steps, kvType);
  let maxDiff = 0;
  theirs.distributions.forEach((distribution, step) => {
    const mine = ourProbabilities(model, [...prompt, ...ours.slice(0, step)]);
    mine.forEach((p, token) => (maxDiff = Math.max(maxDiff, Math.abs(p - distribution[token]!))));
  });
  return { ours, theirs: theirs.tokens, maxDiff };
}
