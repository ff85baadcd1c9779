// NEFTune (`neftune_noise_alpha`): uniform noise on the input embeddings while training, as
// transformers' `neftune_post_forward_hook` adds it (trainer_utils.py): each element of the
// [B, T, C] output gets U(-a, a) with a = alpha / sqrt(T * C), only while the module is in
// training mode. Applied as surgery on the model's embedding module for the span of `train`.
import type { CausalLM } from "../model/causal_lm.ts";
import { type Tensor, noGrad, tidy, zerosLike } from "../torch/index.ts";

/** Wraps the input embedding's forward with the noise; returns the function that restores it. */
export function activateNeftune(model: CausalLM, alpha: number): () => void {
  const embedding = model.inputEmbeddings();
  const original = embedding.forward;
  const ownForward = Object.prototype.hasOwnProperty.call(embedding, "forward");
  embedding.forward = function (this: typeof embedding, ids: Tensor): Tensor {
    const output = original.call(this, ids); // [B, T, C]
    if (!this.training) return output;
    const [T, C] = [output.shape[1]!, output.shape[2]!];
    const magnitude = alpha / Math.sqrt(T * C);
    // The noise is a constant of the graph (transformers draws it outside autograd too).
    const noise = noGrad(() => tidy(() => zerosLike(output).uniform_(-magnitude, magnitude)));
    return output.add(noise);
  };
  return () => {
    if (ownForward) embedding.forward = original;
    else delete (embedding as { forward?: unknown }).forward;
  };
}
