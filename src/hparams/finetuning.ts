// FinetuningArguments: the training stage and method, composed of the freeze, LoRA and RLHF parts
// plus memory-efficient optimizers and loss variants (LLaMA-Factory `hparams/finetuning_args.py`).
// Fields whose features are not built yet are tier "later"; Adam-mini, Muon, Megatron, OFT,
// SwanLab and multimodal switches are out of scope.
import { freezeFields } from "./freeze.ts";
import { loraFields, oftFields } from "./lora.ts";
import { rlhfFields } from "./rlhf.ts";
import {
  type ArgsOf,
  bool,
  choice,
  defineGroup,
  float,
  int,
  list,
  optChoice,
  optInt,
  optStr,
  trainOnly,
  withDefault,
} from "./schema.ts";

const method = {
  stage: choice(
    ["pt", "sft", "rm", "ppo", "dpo", "kto"],
    "sft",
    "Training stage: pre-training, supervised, reward model, PPO, DPO-family or KTO.",
    { trainOnly: true },
  ),
  finetuning_type: choice(
    ["lora", "freeze", "full", "oft"],
    "lora",
    "What trains: LoRA adapters, some layers (freeze), or all weights.",
    { choiceTiers: { oft: "out" } },
  ),
  use_llama_pro: bool(false, "Train only the blocks added by LLaMA Pro expansion."),
  pure_bf16: bool(false, "Train entirely in bfloat16, without fp32 master weights."),
  plot_loss: bool(false, "Save loss curves as images in output_dir."),
  compute_accuracy: bool(false, "Report token-level accuracy during evaluation."),
  disable_shuffling: bool(false, "Keep the training data in order."),
  early_stopping_steps: optInt("Stop when metric_for_best_model has not improved for this many evaluations.", { min: 1 }),
  include_effective_tokens_per_second: bool(false, "Report effective (non-padding) tokens per second."),
};

const lossVariants = trainOnly({
  use_dft_loss: bool(false, "Dynamic fine-tuning loss (DFT).", { tier: "later" }),
  use_asft_loss: bool(false, "Anchored SFT loss (ASFT).", { tier: "later" }),
  asft_alpha: float(0.1, "Power of ASFT's adaptive weight.", { tier: "later" }),
  use_eaft_loss: bool(false, "Entropy-adaptive fine-tuning loss (EAFT).", { tier: "later" }),
  eaft_alpha: float(1.0, "Power of EAFT's adaptive weight.", { tier: "later" }),
});

const galore = trainOnly({
  use_galore: bool(false, "Gradient low-rank projection optimizer (GaLore).", { tier: "later" }),
  galore_target: list(["all"], "Modules GaLore applies to.", { tier: "later" }),
  galore_rank: int(16, "Rank of GaLore's gradient projection.", { tier: "later", min: 1 }),
  galore_update_interval: int(200, "Steps between GaLore projection updates.", { tier: "later", min: 1 }),
  galore_scale: float(2.0, "GaLore scaling coefficient.", { tier: "later" }),
  galore_proj_type: choice(["std", "reverse_std", "right", "left", "full"], "std", "GaLore projection type.", { tier: "later" }),
  galore_layerwise: bool(false, "Update layer by layer to save memory.", { tier: "later" }),
});

const apollo = trainOnly({
  use_apollo: bool(false, "APOLLO optimizer.", { tier: "later" }),
  apollo_target: list(["all"], "Modules APOLLO applies to.", { tier: "later" }),
  apollo_rank: int(16, "Rank of APOLLO's gradient projection.", { tier: "later", min: 1 }),
  apollo_update_interval: int(200, "Steps between APOLLO projection updates.", { tier: "later", min: 1 }),
  apollo_scale: float(32.0, "APOLLO scaling coefficient.", { tier: "later" }),
  apollo_proj: choice(["svd", "random"], "random", "APOLLO projection algorithm.", { tier: "later" }),
  apollo_proj_type: choice(["std", "right", "left"], "std", "APOLLO projection type.", { tier: "later" }),
  apollo_scale_type: choice(["channel", "tensor"], "channel", "APOLLO scaling granularity.", { tier: "later" }),
  apollo_layerwise: bool(false, "Update layer by layer to save memory.", { tier: "later" }),
  apollo_scale_front: bool(false, "Apply the norm-growth limiter before scaling.", { tier: "later" }),
});

const badam = trainOnly({
  use_badam: bool(false, "BAdam block-coordinate optimizer.", { tier: "later" }),
  badam_mode: choice(["layer", "ratio"], "layer", "Layer-wise or ratio-wise BAdam.", { tier: "later" }),
  badam_start_block: optInt("First block of layer-wise BAdam.", { tier: "later" }),
  badam_switch_mode: withDefault(
    optChoice(["ascending", "descending", "random", "fixed"], "How layer-wise BAdam picks the next block.", { tier: "later" }),
    "ascending",
  ),
  badam_switch_interval: withDefault(optInt("Steps between block switches (-1: never).", { tier: "later" }), 50),
  badam_update_ratio: float(0.05, "Update ratio of ratio-wise BAdam.", { tier: "later" }),
  badam_mask_mode: choice(["adjacent", "scatter"], "adjacent", "BAdam mask mode.", { tier: "later" }),
  badam_verbose: int(0, "BAdam verbosity.", { tier: "later" }),
});

const outOfScope = trainOnly({
  use_adam_mini: bool(false, "Adam-mini optimizer.", { tier: "out" }),
  use_muon: bool(false, "Muon optimizer.", { tier: "out" }),
  use_mca: bool(false, "Megatron Core Adapter training.", { tier: "out" }),
  use_megatron_bridge: bool(false, "Megatron Bridge training.", { tier: "out" }),
  use_hyper_parallel: bool(false, "HyperParallel (FSDP/TP) training.", { tier: "out" }),
  hyper_parallel_args: optStr("HyperParallel strategy file.", { tier: "out" }),
  hyper_parallel_cp_size: int(1, "HyperParallel context-parallel size.", { tier: "out", min: 1 }),
  freeze_vision_tower: bool(true, "Freeze the vision tower of a multimodal model.", { tier: "out" }),
  freeze_multi_modal_projector: bool(true, "Freeze the multimodal projector.", { tier: "out" }),
  freeze_language_model: bool(false, "Freeze the language model of a multimodal model.", { tier: "out" }),
  use_swanlab: bool(false, "Log to SwanLab.", { tier: "out" }),
  swanlab_project: withDefault(optStr("SwanLab project.", { tier: "out" }), "llamafactory"),
  swanlab_workspace: optStr("SwanLab workspace.", { tier: "out" }),
  swanlab_run_name: optStr("SwanLab run name.", { tier: "out" }),
  swanlab_mode: choice(["cloud", "local"], "cloud", "SwanLab mode.", { tier: "out" }),
  swanlab_api_key: optStr("SwanLab API key (never logged or saved).", { tier: "out" }),
  swanlab_logdir: optStr("SwanLab log folder.", { tier: "out" }),
  swanlab_lark_webhook_url: optStr("SwanLab Lark webhook.", { tier: "out" }),
  swanlab_lark_secret: optStr("SwanLab Lark secret.", { tier: "out" }),
});

const rlhf = trainOnly(rlhfFields);
const oft = trainOnly(oftFields);

export const finetuningFields = {
  ...method,
  ...freezeFields,
  ...loraFields,
  ...oft,
  ...rlhf,
  ...galore,
  ...apollo,
  ...badam,
  ...lossVariants,
  ...outOfScope,
};
export type FinetuningArguments = ArgsOf<typeof finetuningFields>;

/** LLaMA-Factory masks keys ending in `api_key` (`swanlab_api_key`) in `to_dict()`. */
function maskApiKeys(values: Record<string, unknown>): Record<string, unknown> {
  const out = { ...values };
  for (const key of Object.keys(out)) if (key.endsWith("api_key") && out[key] !== null) out[key] = `<${key.toUpperCase()}>`;
  return out;
}

export const finetuningGroup = defineGroup<typeof finetuningFields>(
  "FinetuningArguments",
  "finetuning",
  [
    ["Method", method],
    ["FreezeArguments", freezeFields],
    ["LoraArguments", loraFields],
    ["RLHFArguments", rlhf],
    ["GaLore / APOLLO / BAdam (not yet supported)", { ...galore, ...apollo, ...badam }],
    ["SFT loss variants (not yet supported)", lossVariants],
    ["OFT (out of scope)", oft],
    ["Other optimizers, back-ends, multimodal, SwanLab (out of scope)", outOfScope],
  ],
  maskApiKeys,
);
