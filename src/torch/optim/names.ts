// The HF Trainer's `optim` names lmfactory builds, and the torch optimizer each one is (fused and
// HF's own AdamW make the same update as torch's). One table read by the parameter system (which
// names are supported) and the trainer (what to build); it imports nothing, so parsing loads no engine.
export const OPTIMIZER_FOR_NAME = {
  adamw_torch: "adamw",
  adamw_torch_fused: "adamw",
  adamw_hf: "adamw",
  sgd: "sgd",
} as const;

export type BuiltOptimizerName = keyof typeof OPTIMIZER_FOR_NAME;
