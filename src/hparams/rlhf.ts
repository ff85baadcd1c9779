// RLHFArguments: preference optimisation (DPO, ORPO, SimPO, KTO) and PPO, with the reference and
// reward models they use (LLaMA-Factory `RLHFArguments`). The dpo, kto and ppo fields work
// (src/train/stages/); a quantized reference model and the wandb PPO logger are not built yet:
// non-default values are refused.
import { bool, choice, float, int, intChoice, optChoice, optFloat, optList, optStr } from "./schema.ts";

const later = { tier: "later" } as const;

export const rlhfFields = {
  pref_beta: float(0.1, "Beta of the preference loss (how far the policy may move from the reference).", {
    aliases: ["dpo_beta"],
  }),
  pref_ftx: float(0, "Weight of the supervised loss added to the preference loss.", { aliases: ["dpo_ftx"], min: 0 }),
  pref_bco_weight: float(0, "Weight of the Binary Classifier Optimization term in DPO.", { min: 0 }),
  pref_loss: choice(
    ["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"],
    "sigmoid",
    "Preference loss: sigmoid (DPO), hinge, ipo, kto_pair, orpo or simpo.",
    { aliases: ["dpo_loss"] },
  ),
  dpo_label_smoothing: float(0, "Label smoothing of robust (conservative) DPO, in [0, 0.5].", { min: 0, max: 0.5 }),
  kto_chosen_weight: float(1, "Weight of the desirable examples' loss in KTO.", { min: 0 }),
  kto_rejected_weight: float(1, "Weight of the undesirable examples' loss in KTO.", { min: 0 }),
  simpo_gamma: float(0.5, "Target reward margin of SimPO."),
  ld_alpha: optFloat("LD-DPO weight of the verbose tail of responses."),
  ppo_buffer_size: int(1, "Mini-batches collected into one PPO experience buffer.", { min: 1 }),
  ppo_epochs: int(4, "Epochs per PPO optimisation step.", { min: 1 }),
  ppo_score_norm: bool(false, "Normalise reward scores in PPO (running mean and std)."),
  ppo_target: float(6.0, "Target KL of PPO's adaptive KL control."),
  ppo_whiten_rewards: bool(false, "Whiten rewards before computing advantages in PPO."),
  ppo_logger: optChoice(["wandb", "tensorboard"], "Logger of the PPO statistics (TRL's log_with): tensorboard writes them under logging_dir/trl.", {
    choiceTiers: { wandb: "later" },
  }),
  ref_model: optStr("Reference model for DPO or PPO (defaults to the model being trained)."),
  ref_model_adapters: optList("Adapters of the reference model."),
  ref_model_quantization_bit: intChoice([4, 8], "Quantize ref_model to this many bits while it loads (bitsandbytes' formats, as quantization_bit)."),
  reward_model: optStr("Reward model for PPO: a folder, or a URL when reward_model_type is api."),
  reward_model_adapters: optList("Adapters of the reward model (reward_model_type full)."),
  reward_model_quantization_bit: intChoice([4, 8], "Quantize the reward model (reward_model_type full) to this many bits while loading (bitsandbytes)."),
  reward_model_type: choice(
    ["lora", "full", "api"],
    "lora",
    "Reward model kind in PPO: a LoRA adapter on the policy (LoRA training only), a full model, or an HTTP API.",
  ),
};
