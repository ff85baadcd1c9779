// Gradient checkpointing, done in TypeScript: the forward pass keeps only each decoder layer's
// input; the backward pass walks the layers in reverse, recomputing one layer's forward with
// gradients on and backpropagating through it (what torch.utils.checkpoint does with
// use_reentrant=True). Each layer's RNG state is replayed so dropout masks match, and under the
// trainer's autocast every forward (first and recomputed) is autocast while backward is not, as
// torch.utils.checkpoint records and restores the autocast state. An auxiliary loss the stage took
// (MoE router balancing) backpropagates through each recomputed layer.
import { type AutocastSpec, type Tensor, autocastIf, getRngState, keep, noGrad, setRngState, tidy } from "../../torch/index.ts";
import type { CausalLM, ForwardOptions } from "../causal_lm.ts";

/**
 * Forward and backward of `lossOf(hiddenStates)` with per-layer recomputation, where the hidden
 * states are the model's last, normed ones [B, T, C]; gradients accumulate in the parameters'
 * `.grad` exactly as `lossOf(model.hiddenStates(ids)).backward()` would. Returns the loss value.
 * Peak activation memory is one layer's worth plus L hidden states [B, T, C].
 */
export function checkpointedBackward(
  model: CausalLM,
  inputIds: Tensor,
  lossOf: (hidden: Tensor) => Tensor,
  options: Omit<ForwardOptions, "cache" | "logitsToKeep"> & { autocast?: AutocastSpec | null } = {},
): number {
  const layers = model.decoderLayers;
  const amp = <T>(fn: () => T): T => autocastIf(options.autocast, fn);
  const saved: { input: Tensor; rng: Tensor }[] = [];
  try {
    const shared = tidy(() => {
      const context = model.layerContext(inputIds, options);
      for (const tensor of context.tensors) keep(tensor);
      return context;
    });
    try {
      // Forward without a graph, keeping each layer's input: h_0 .. h_L.
      let hidden = noGrad(() => keep(amp(() => model.embed(inputIds))));
      const embedded = hidden;
      for (let i = 0; i < layers.length; i++) {
        const rng = keep(getRngState());
        saved.push({ input: hidden, rng });
        const input = hidden;
        hidden = noGrad(() => tidy(() => keep(amp(() => layers[i]!.forward(input, shared, null, i)))));
      }

      // The head: final norm, lm_head and the loss, with a graph from h_L.
      let upstream: Tensor;
      const last = hidden;
      const lossValue = tidy(() => {
        const top = last.detach().requiresGrad_(true);
        // Logits are not needed by backward: free them before it.
        const loss = tidy(() => amp(() => lossOf(model.finalNorm(top))));
        loss.backward();
        upstream = keep(top.grad!);
        return loss.item();
      });
      last.dispose();

      // Layers in reverse: recompute with a graph, backpropagate the upstream gradient. The
      // generator is restored afterwards so that recomputation leaves no trace in later draws.
      const rngAfterForward = keep(getRngState());
      for (let i = layers.length - 1; i >= 0; i--) {
        const { input, rng } = saved[i]!;
        const gradOut = upstream!;
        upstream = tidy(() => {
          setRngState(rng);
          const leaf = input.detach().requiresGrad_(true);
          const out = amp(() => layers[i]!.forward(leaf, shared, null, i));
          // The part of the auxiliary loss (MoE load balancing) whose gradient flows through this layer.
          const auxiliary = model.auxiliaryLossOfLayer(i);
          if (auxiliary) out.mul(gradOut).sum().add(auxiliary).backward();
          else out.backward(gradOut);
          return keep(leaf.grad!);
        });
        gradOut.dispose();
        if (input !== embedded) input.dispose();
      }

      setRngState(rngAfterForward);
      rngAfterForward.dispose();

      // The embedding, whose output gradient is the last upstream (nothing to do when frozen,
      // as with LoRA and freeze tuning).
      const gradEmbedded = upstream!;
      if (model.inputEmbeddings().weight.requiresGrad) {
        tidy(() => amp(() => model.embed(inputIds)).backward(gradEmbedded));
      }
      gradEmbedded.dispose();
      embedded.dispose();
      return lossValue;
    } finally {
      for (const tensor of shared.tensors) tensor.dispose();
    }
  } finally {
    for (const { input, rng } of saved) {
      rng.dispose();
      input.dispose();
    }
  }
}
