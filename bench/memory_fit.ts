// The largest model whose LoRA step (gradient checkpointing) fits in 24 GiB, from what
// bench/train_step.ts measures on the 0.5B Qwen2 shape: our peak RSS at 24 layers and the memory
// one decoder layer adds (peak at 24 layers minus peak at 8, over 16). A linear model: the peak of
// another Qwen2 shape is the measured fixed part (less its embedding weights) plus its own weights
// at the precision's bytes per weight plus, per layer, the measured non-weight memory of a layer
// (checkpointed layer input, LoRA weights, gradients and AdamW states, allocator slack) scaled by
// the hidden size. It is an estimate, printed as one, for the Qwen2.5 family's published shapes.

export interface QwenShape {
  name: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  /** Tied input and output embeddings (one matrix). */
  tied?: boolean;
}

/** Qwen2.5 config.json shapes (hidden_size, num_hidden_layers, heads, kv heads, intermediate, vocab). */
export const QWEN25: QwenShape[] = [
  { name: "Qwen2.5-0.5B", hidden: 896, layers: 24, heads: 14, kvHeads: 2, intermediate: 4864, vocab: 151936, tied: true },
  { name: "Qwen2.5-1.5B", hidden: 1536, layers: 28, heads: 12, kvHeads: 2, intermediate: 8960, vocab: 151936, tied: true },
  { name: "Qwen2.5-3B", hidden: 2048, layers: 36, heads: 16, kvHeads: 2, intermediate: 11008, vocab: 151936, tied: true },
  { name: "Qwen2.5-7B", hidden: 3584, layers: 28, heads: 28, kvHeads: 4, intermediate: 18944, vocab: 152064 },
  { name: "Qwen2.5-14B", hidden: 5120, layers: 48, heads: 40, kvHeads: 8, intermediate: 13824, vocab: 152064 },
  { name: "Qwen2.5-32B", hidden: 5120, layers: 64, heads: 40, kvHeads: 8, intermediate: 27648, vocab: 152064 },
];

const MIB = 2 ** 20;
const BUDGET_MIB = 24 * 1024;

/** Weights of one Qwen2 decoder layer: q/k/v with bias, o, gate/up/down, two norms. */
export function perLayerParameters(shape: Omit<QwenShape, "name" | "vocab">): number {
  const D = shape.hidden / shape.heads;
  const q = shape.hidden * shape.heads * D + shape.heads * D;
  const kv = 2 * (shape.hidden * shape.kvHeads * D + shape.kvHeads * D);
  const o = shape.heads * D * shape.hidden;
  return q + kv + o + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden;
}

function embeddingParameters(shape: Pick<QwenShape, "hidden" | "vocab" | "tied">): number {
  return shape.vocab * shape.hidden * (shape.tied ? 1 : 2) + shape.hidden;
}

/**
 * From the measured shape (`measured`, its parameter count, our peak MiB at its layer count, MiB
 * per layer and weights per layer) and the precision's bytes per frozen weight: the estimated
 * peak of each Qwen2.5 shape, and the largest that fits in 24 GiB.
 */
export function largestFitting(
  measured: Omit<QwenShape, "name"> & { config?: Record<string, unknown> },
  _parameters: number,
  peakMiB: number,
  mibPerLayer: number,
  weightsPerLayer: number,
  precision: "fp32" | "bf16" = "fp32",
): { bytesPerWeight: number; layerOtherMiB: number; fixedOtherMiB: number; estimates: { name: string; peakMiB: number; fits: boolean }[]; largest: string | null } {
  const bytesPerWeight = precision === "bf16" ? 2 : 4;
  const tied = measured.config?.tie_word_embeddings === true;
  const layerOtherMiB = mibPerLayer - (weightsPerLayer * bytesPerWeight) / MIB;
  const fixedOtherMiB = peakMiB - measured.layers * mibPerLayer - (embeddingParameters({ ...measured, tied }) * bytesPerWeight) / MIB;
  const estimates = QWEN25.map((shape) => {
    const weights = ((embeddingParameters(shape) + shape.layers * perLayerParameters(shape)) * bytesPerWeight) / MIB;
    const peak = fixedOtherMiB + weights + shape.layers * layerOtherMiB * (shape.hidden / measured.hidden);
    return { name: shape.name, peakMiB: peak, fits: peak <= BUDGET_MIB };
  });
  const fitting = estimates.filter((estimate) => estimate.fits);
  return { bytesPerWeight, layerOtherMiB, fixedOtherMiB, estimates, largest: fitting.length ? fitting[fitting.length - 1]!.name : null };
}
