// LoraArguments (and OFT, out of scope): low-rank adapters, their variants (rsLoRA, DoRA, PiSSA,
// LoRA+) and what else trains beside them (LLaMA-Factory `LoraArguments`, `OFTArguments`).
import { bool, float, int, list, optFloat, optInt, optList } from "./schema.ts";

export const loraFields = {
  additional_target: optList("Modules besides the LoRA layers that train fully and are saved with the adapter."),
  lora_alpha: optInt("LoRA scale numerator (defaults to lora_rank * 2).", { min: 1 }),
  lora_dropout: float(0, "Dropout on the LoRA input.", { min: 0, max: 1 }),
  lora_rank: int(8, "Rank of the LoRA update matrices.", { min: 1 }),
  lora_target: list(["all"], "Modules that get LoRA, comma-separated; all means every linear layer except the output head."),
  lora_bf16_mode: bool(false, "Keep the LoRA weights in bfloat16.", {
    noEffect: "LLaMA-Factory declares it and reads it nowhere; LoRA weights are float32 unless pure_bf16",
  }),
  loraplus_lr_ratio: optFloat("LoRA+: learning rate of B over that of A.", { min: 0 }),
  loraplus_lr_embedding: float(1e-6, "LoRA+: learning rate of LoRA embedding layers.", { min: 0 }),
  use_rslora: bool(false, "Scale by alpha / sqrt(rank) instead of alpha / rank (rank-stabilised LoRA)."),
  use_dora: bool(false, "Weight-decomposed LoRA (DoRA)."),
  pissa_init: bool(false, "Initialise the adapter from the principal singular vectors (PiSSA)."),
  pissa_iter: int(16, "Fast-SVD iterations for PiSSA; -1 uses a full SVD.", { min: -1 }),
  pissa_convert: bool(false, "Save the PiSSA adapter converted to an ordinary LoRA adapter."),
  create_new_adapter: bool(false, "Start a new adapter with fresh weights on top of the loaded ones."),
};

export const oftFields = {
  module_dropout: float(0, "OFT dropout.", { tier: "out" }),
  oft_rank: int(0, "OFT rank.", { tier: "out" }),
  oft_block_size: int(32, "OFT block size.", { tier: "out" }),
  oft_target: list(["all"], "Modules that get OFT.", { tier: "out" }),
};
