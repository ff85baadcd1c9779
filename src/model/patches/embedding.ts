// resize_vocab: grow the embedding (and an untied lm_head) to the tokenizer's size, padded to a
// multiple of 64, with each new row the mean of the old rows plus noise of std 1/sqrt(C), as
// LLaMA-Factory's resize_embedding_layer / _noisy_mean_initialization.
import { type Tensor, cat, keep, noGrad, randn, tidy } from "../../torch/index.ts";
import type { CausalLM } from "../causal_lm.ts";

function grown(weight: Tensor, newRows: number): Tensor {
  return noGrad(() =>
    tidy(() => {
      const [V, C] = weight.shape as [number, number];
      const mean = weight.mean(0, true); // [1, C]
      const noise = randn([newRows, C], { dtype: weight.dtype, device: weight.device }).mul(1 / Math.sqrt(C));
      return keep(cat([weight, mean.expand(newRows, C).add(noise)], 0)); // [V + new, C]
    }),
  );
}

/** Resizes to `tokenizerSize` rounded up to `padToMultipleOf`; returns the new size (unchanged if it fits). */
export function resizeTokenEmbeddings(model: CausalLM, tokenizerSize: number, padToMultipleOf = 64): number {
  const embedding = model.inputEmbeddings();
  const head = model.outputEmbeddings();
  const current = embedding.weight.shape[0]!;
  if (tokenizerSize <= current) return current;
  const size = Math.ceil(tokenizerSize / padToMultipleOf) * padToMultipleOf;
  const tied = head.weight === embedding.weight;
  const trainable = embedding.weight.requiresGrad;
  const newEmbedding = grown(embedding.weight, size - current).requiresGrad_(trainable);
  embedding.weight.dispose();
  embedding.weight = newEmbedding;
  if (tied) {
    head.weight = newEmbedding;
  } else {
    const old = head.weight;
    const newHead = grown(old, size - current).requiresGrad_(old.requiresGrad);
    old.dispose();
    head.weight = newHead;
  }
  model.config.vocab_size = size;
  return size;
}
