// A causal LM with a scalar value head, as TRL's AutoModelForCausalLMWithValueHead: for reward
// models and PPO. The head is `v_head.summary` (Linear hidden -> 1) after dropout; LLaMA-Factory
// saves it apart from the model as value_head.safetensors with keys `v_head.summary.{weight,bias}`.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { Dropout, Linear, Module, type Tensor, loadTorchBin, noGrad, openSafetensors, saveSafetensors, tidy } from "../torch/index.ts";
import type { CausalLM, ForwardOptions } from "./causal_lm.ts";

export class ValueHead extends Module {
  dropout: Dropout;
  summary: Linear;

  constructor(hiddenSize: number, options: { dropoutProb?: number } = {}) {
    super();
    this.dropout = new Dropout(options.dropoutProb ?? 0.1);
    this.summary = new Linear(hiddenSize, 1);
  }

  /** hidden [B, T, C] -> values [B, T] (computed in the head's dtype, as TRL does). */
  forward(hidden: Tensor): Tensor {
    return tidy(() => this.summary.forward(this.dropout.forward(hidden).to(this.summary.weight.dtype)).squeeze(-1));
  }
}

export class CausalLMWithValueHead extends Module {
  pretrained_model: CausalLM;
  v_head: ValueHead;

  constructor(model: CausalLM, options: { dropoutProb?: number; initStrategy?: "normal" | null; initializerRange?: number } = {}) {
    super();
    this.pretrained_model = model;
    this.v_head = new ValueHead(model.config.hidden_size, { dropoutProb: options.dropoutProb });
    // TRL's v_head_init_strategy "normal": N(0, v_head_initializer_range), bias zero.
    if (options.initStrategy === "normal") this.v_head.summary.initNormal(options.initializerRange ?? 0.2);
  }

  /** ids [B, T] -> logits [B, T, V] and values [B, T]. */
  forward(inputIds: Tensor, options: ForwardOptions = {}): { logits: Tensor; values: Tensor } {
    return tidy(() => {
      const hidden = this.pretrained_model.hiddenStates(inputIds, options);
      return { logits: this.pretrained_model.logits(hidden), values: this.v_head.forward(hidden) };
    });
  }
}

/** Writes value_head.safetensors (`v_head.summary.weight` [1, C], `v_head.summary.bias` [1]). */
export function saveValueHead(model: { v_head: ValueHead }, folder: string): void {
  saveSafetensors(join(folder, "value_head.safetensors"), {
    "v_head.summary.weight": model.v_head.summary.weight,
    "v_head.summary.bias": model.v_head.summary.bias!,
  });
}

/** Loads the value head saved beside a model or adapter (safetensors, else .bin); false if none. */
export function loadValueHead(model: { v_head: ValueHead }, folder: string): boolean {
  const safetensors = join(folder, "value_head.safetensors");
  const bin = join(folder, "value_head.bin");
  let tensors: Record<string, Tensor>;
  if (existsSync(safetensors)) {
    const reader = openSafetensors(safetensors);
    try {
      tensors = Object.fromEntries(reader.names().map((name) => [name, reader.get(name)]));
    } finally {
      reader.close();
    }
  } else if (existsSync(bin)) {
    tensors = loadTorchBin(bin);
  } else {
    return false;
  }
  try {
    const weight = tensors["v_head.summary.weight"];
    const bias = tensors["v_head.summary.bias"];
    if (!weight || !bias) {
      throw new UserError("the value head file lacks v_head.summary.weight or v_head.summary.bias", folder, "save the reward model again");
    }
    noGrad(() => {
      model.v_head.summary.weight.copy_(weight);
      model.v_head.summary.bias!.copy_(bias);
    });
    return true;
  } finally {
    for (const tensor of Object.values(tensors)) tensor.dispose();
  }
}
