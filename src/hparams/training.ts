// TrainingArguments: the part of Hugging Face's `Seq2SeqTrainingArguments` that LLaMA-Factory
// configs, examples and web board use (LLaMA-Factory `hparams/training_args.py`). Data-parallel
// training runs on c10d (src/train/distributed/); a DeepSpeed config is read and runs as the same
// data-parallel training. FSDP, Ray, the profiler and FP8 are out of scope.
import {
  type ArgsOf,
  bool,
  choice,
  defineGroup,
  float,
  int,
  list,
  optBool,
  optFloat,
  optInt,
  optJson,
  optList,
  optStr,
  str,
  type ValueTier,
} from "./schema.ts";
// Names only: schedulers.ts imports nothing but types, so the engine does not load here.
import { OPTIMIZER_FOR_NAME } from "../torch/optim/names.ts";
import { SCHEDULER_NAMES } from "../torch/optim/schedulers.ts";

const schedulers = [
  "linear",
  "cosine",
  "cosine_with_restarts",
  "polynomial",
  "constant",
  "constant_with_warmup",
  "inverse_sqrt",
  "reduce_lr_on_plateau",
  "cosine_with_min_lr",
  "warmup_stable_decay",
] as const;

const optimizers = [
  "adamw_torch",
  "adamw_torch_fused",
  "adamw_hf",
  "sgd",
  "adagrad",
  "rmsprop",
  "adafactor",
  "adamw_8bit",
  "adamw_bnb_8bit",
  "paged_adamw_8bit",
  "paged_adamw_32bit",
  "lion_8bit",
  "lion_32bit",
  "paged_lion_8bit",
  "paged_lion_32bit",
] as const;

const builtOptimizers: readonly string[] = Object.keys(OPTIMIZER_FOR_NAME);
const laterOptimizers: Record<string, ValueTier> = Object.fromEntries(
  optimizers.filter((name) => !builtOptimizers.includes(name)).map((name) => [name, "later"]),
);

const core = {
  output_dir: str("trainer_output", "Folder for checkpoints, logs and the final model."),
  overwrite_output_dir: bool(false, "Start over instead of resuming from the last checkpoint in output_dir, writing over lmfactory's own outputs there (never over files it did not write)."),
  do_train: bool(false, "Run training."),
  do_eval: bool(false, "Run evaluation on the validation set."),
  do_predict: bool(false, "Run prediction on the evaluation set and save the outputs."),
  eval_strategy: choice(["no", "steps", "epoch"], "no", "When to evaluate during training.", {
    aliases: ["evaluation_strategy"],
  }),
  eval_steps: optFloat("Evaluate every this many steps (a fraction < 1 means of all steps); defaults to logging_steps.", {
    min: 0,
  }),
  eval_delay: float(0, "Steps or epochs to wait before the first evaluation.", { min: 0 }),
  eval_on_start: bool(false, "Evaluate once before training starts."),
  eval_accumulation_steps: optInt("Move predictions to the CPU every this many evaluation steps.", {
    min: 1,
    noEffect: "each evaluation batch is reduced to numbers at once (the HF Trainer's behaviour with 1); no prediction tensors are held",
  }),
  prediction_loss_only: bool(false, "During evaluation, compute only the loss."),
  per_device_train_batch_size: int(8, "Examples per device in each training step.", { min: 1 }),
  per_device_eval_batch_size: int(8, "Examples per device in each evaluation step.", { min: 1 }),
  gradient_accumulation_steps: int(1, "Steps whose gradients are summed before each optimizer update.", { min: 1 }),
  learning_rate: float(5e-5, "Peak learning rate.", { min: 0 }),
  weight_decay: float(0, "Decoupled weight decay.", { min: 0 }),
  adam_beta1: float(0.9, "Adam's first-moment decay.", { min: 0, max: 1 }),
  adam_beta2: float(0.999, "Adam's second-moment decay.", { min: 0, max: 1 }),
  adam_epsilon: float(1e-8, "Adam's epsilon.", { min: 0 }),
  max_grad_norm: float(1.0, "Clip the global gradient norm to this value (0 turns clipping off).", { min: 0 }),
  num_train_epochs: float(3, "Passes over the training data.", { min: 0 }),
  max_steps: int(-1, "Total optimizer steps; overrides num_train_epochs when positive.", { min: -1 }),
  lr_scheduler_type: choice(schedulers, "linear", "Learning-rate schedule after warm-up.", {
    // Supported exactly when the scheduler module builds it (reduce_lr_on_plateau is not built yet).
    choiceTiers: Object.fromEntries(schedulers.filter((name) => !(SCHEDULER_NAMES as readonly string[]).includes(name)).map((name) => [name, "later" as const])),
  }),
  lr_scheduler_kwargs: optJson("Extra scheduler options as a dict or JSON string (e.g. num_cycles)."),
  warmup_ratio: float(0, "Fraction of all steps spent warming up the learning rate.", { min: 0, max: 1 }),
  warmup_steps: int(0, "Warm-up steps; overrides warmup_ratio when positive.", { min: 0 }),
  optim: choice(optimizers, "adamw_torch", "Optimizer.", { choiceTiers: laterOptimizers }),
  seed: int(42, "Random seed for initialisation, shuffling and dropout."),
  data_seed: optInt("Separate seed for data sampling."),
  bf16: bool(false, "Mixed precision with bfloat16: forward passes autocast to bfloat16 over float32 trainable weights (HF Trainer)."),
  fp16: bool(false, "Float16 weights on CUDA (LoRA weights float32), without autocast or loss scaling; refused on the CPU."),
  tf32: optBool(null, "Allow TF32 matmuls on Ampere or newer GPUs.", {
    noEffect: "the engine cannot switch TF32: CPU runs have none, and CUDA runs keep libtorch's default (TF32 off for matmuls)",
  }),
  use_cpu: bool(false, "Train on the CPU even when a GPU is present."),
  gradient_checkpointing: bool(false, "Recompute activations in the backward pass to save memory.", {
    noEffect: "lmfactory recomputes activations unless disable_gradient_checkpointing is set, as LLaMA-Factory does",
  }),
  gradient_checkpointing_kwargs: optJson("Options for gradient checkpointing, as a dict or JSON string.", {
    noEffect: "lmfactory recomputes each layer its own way (RNG state replayed); the gradients are those of every torch.utils.checkpoint setting",
  }),
  resume_from_checkpoint: optStr("Checkpoint folder to resume training from."),
  remove_unused_columns: bool(true, "Drop dataset columns the model does not take.", {
    noEffect: "batches hold exactly what the stage needs; LLaMA-Factory forces this to false too",
  }),
  label_names: optList("Names of the label inputs.", { noEffect: "the stage's batches always carry their labels as `labels`" }),
  dataloader_num_workers: int(0, "Worker processes that load batches.", {
    min: 0,
    noEffect: "the data is tokenized before training (see preprocessing_num_workers) and batches are collated in-process",
  }),
  dataloader_drop_last: bool(false, "Drop the last incomplete batch."),
  ddp_timeout: int(1800, "Seconds a distributed worker waits for the others (rendezvous and each collective) before it stops.", { min: 1 }),
  ddp_find_unused_parameters: optBool(
    null,
    "Distributed training: allow trainable parameters without a gradient in a step (zeros where another rank has one); unset: false for LoRA or with gradient checkpointing, as LLaMA-Factory and HF decide.",
  ),
  deepspeed: optJson("DeepSpeed config file or dict: runs as the same data-parallel training (ZeRO does not shard here); its values must agree with the training arguments or be \"auto\"."),
  include_num_input_tokens_seen: bool(false, "Count and log the input tokens seen."),
  neftune_noise_alpha: optFloat("Add NEFTune noise of this scale to the input embeddings while training.", { min: 0 }),
  torch_compile: bool(false, "Compile the model.", { tier: "later" }),
  auto_find_batch_size: bool(false, "Halve the batch size on out-of-memory until it fits.", { tier: "later" }),
  full_determinism: bool(false, "Make every kernel deterministic.", { tier: "later" }),
};

const logging = {
  logging_dir: optStr("Folder for TensorBoard event files (default: output_dir/runs/<date>_<hostname>, as HF)."),
  logging_strategy: choice(["no", "steps", "epoch"], "steps", "When to log."),
  logging_first_step: bool(false, "Also log the first step."),
  logging_steps: float(500, "Log every this many steps (a fraction < 1 means of all steps).", { min: 0 }),
  log_level: choice(["passive", "debug", "info", "warning", "error", "critical"], "passive", "Logging verbosity."),
  disable_tqdm: optBool(null, "Hide the progress bar."),
  report_to: list(["none"], "Experiment trackers to report to: tensorboard (all means tensorboard here); wandb, trackio, ... not yet; none for none.", {
    tier: "later",
    choiceTiers: { none: "now", tensorboard: "now", all: "now" },
  }),
  run_name: optStr("Name of this run in logs and trackers."),
  project: optStr("Trackio project name.", { tier: "later" }),
  trackio_space_id: optStr("Trackio Space to log to.", { tier: "later" }),
};

const saving = {
  save_strategy: choice(["no", "steps", "epoch", "best"], "steps", "When to save checkpoints (`best`: whenever metric_for_best_model improves)."),
  save_steps: float(500, "Save a checkpoint every this many steps (a fraction < 1 means of all steps).", { min: 0 }),
  save_total_limit: optInt("Keep at most this many checkpoints.", { min: 1 }),
  save_safetensors: bool(true, "Save weights as safetensors (false: pytorch_model.bin).", { tier: "later" }),
  save_only_model: bool(false, "Save weights only, without optimizer and scheduler state (cannot resume exactly)."),
  load_best_model_at_end: bool(false, "Load the best checkpoint by metric_for_best_model at the end."),
  metric_for_best_model: optStr("Metric that picks the best checkpoint (default: loss)."),
  greater_is_better: optBool(null, "Whether a larger metric_for_best_model is better."),
  push_to_hub: bool(false, "Upload the model to the hub.", { tier: "later" }),
  hub_model_id: optStr("Hub repository to upload to.", { tier: "later" }),
  hub_token: optStr("Hub token for uploads (never logged or saved).", { tier: "later" }),
};

const generation = {
  predict_with_generate: bool(false, "Generate text during prediction (for BLEU/ROUGE and saved predictions)."),
  generation_max_length: optInt("Longest generated sequence in prediction; defaults to cutoff_len.", {
    min: 1,
    noEffect: "as in LLaMA-Factory, prediction is bounded by max_new_tokens (or max_length) from the generating arguments, which Seq2SeqTrainer prefers",
  }),
  generation_num_beams: optInt("Beams used in prediction.", {
    min: 1,
    noEffect: "as in LLaMA-Factory, prediction uses num_beams from the generating arguments, which Seq2SeqTrainer prefers; set num_beams",
  }),
};

const outOfScope = {
  // HF's `fsdp` is `Union[list[FSDPOption], str]`: `full_shard auto_wrap` or `[full_shard, auto_wrap]`.
  fsdp: optList("FSDP options.", { tier: "out" }),
  fsdp_config: optJson("FSDP config file or dict.", { tier: "out" }),
  fsdp_transformer_layer_cls_to_wrap: optStr("Decoder layer class FSDP wraps (deprecated in HF; use fsdp_config).", { tier: "out" }),
  ray_run_name: optStr("Ray run name.", { tier: "out" }),
  ray_storage_path: optStr("Ray storage path.", { tier: "out" }),
  ray_num_workers: int(1, "Ray workers.", { tier: "out" }),
  ray_init_kwargs: optJson("Ray init options.", { tier: "out" }),
  master_addr: optStr("Ray master address.", { tier: "out" }),
  master_port: optStr("Ray master port.", { tier: "out" }),
  enable_torch_profiler: bool(false, "Run the PyTorch profiler.", { tier: "out" }),
  profiler_output_dir: optStr("Profiler output folder.", { tier: "out" }),
  profiler_wait_steps: int(1, "Profiler wait steps.", { tier: "out" }),
  profiler_warmup_steps: int(1, "Profiler warm-up steps.", { tier: "out" }),
  profiler_active_steps: int(1, "Profiler active steps.", { tier: "out" }),
  profiler_repeat: int(1, "Profiler repeats.", { tier: "out" }),
  profiler_record_shapes: bool(true, "Profiler records shapes.", { tier: "out" }),
  profiler_profile_memory: bool(true, "Profiler records memory.", { tier: "out" }),
  profiler_with_stack: bool(true, "Profiler records stacks.", { tier: "out" }),
  profile_modules: optStr("Modules to time.", { tier: "out" }),
  fp8: bool(false, "FP8 training.", { tier: "out" }),
  fp8_backend: str("auto", "FP8 back-end.", { tier: "out" }),
  fp8_enable_fsdp_float8_all_gather: bool(false, "FP8 all-gather under FSDP.", { tier: "out" }),
};

export const trainingFields = { ...core, ...logging, ...saving, ...generation, ...outOfScope };
export type TrainingArguments = ArgsOf<typeof trainingFields>;

export const trainingGroup = defineGroup<typeof trainingFields>("TrainingArguments", "training", [
  ["Optimisation and steps", core],
  ["Logging", logging],
  ["Checkpoints", saving],
  ["Prediction", generation],
  ["FSDP, Ray, profiler and FP8 (out of scope)", outOfScope],
]);
