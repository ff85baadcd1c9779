// Keys of other trainers' configs, so that such a key is refused by naming where it comes from
// instead of as a typo: Megatron (LLaMA-Factory's `use_mca` / `use_megatron_bridge` back-ends:
// `hparams/megatron_bridge_args.py`, `examples/megatron*/`), LLaMA-Factory v1 (`v1/config/*_args.py`)
// and Accelerate launch configs (`examples/accelerate/`). None of these names is an lmfactory key.

export interface ForeignKey {
  /** Whose key it is, as the message says it. */
  trainer: string;
  /** The lmfactory key(s) that do the same job, where there are any. */
  instead?: string;
}

const MEGATRON = "a Megatron argument (LLaMA-Factory's use_mca / use_megatron_bridge back-ends, out of scope here)";
const megatronKeys = [
  "tensor_model_parallel_size",
  "pipeline_model_parallel_size",
  "virtual_pipeline_model_parallel_size",
  "expert_model_parallel_size",
  "context_parallel_size",
  "sequence_parallel",
  "recompute_granularity",
  "recompute_method",
  "recompute_num_layers",
  "account_for_embedding_in_pipeline_split",
  "account_for_loss_in_pipeline_split",
  "bias_activation_fusion",
  "apply_rope_fusion",
  "masked_softmax_fusion",
  "cross_entropy_loss_fusion",
  "moe_grouped_gemm",
  "moe_token_dispatcher_type",
  "calculate_per_token_loss",
  "use_distributed_optimizer",
  "overlap_param_gather",
  "overlap_grad_reduce",
  "use_packed_sequences",
  "megatron_pretrained_checkpoint",
  "export_hf_on_finish",
] as const;

const V1 = "a LLaMA-Factory v1 argument (USE_V1=1); lmfactory reads LLaMA-Factory's default (v0) configs";
const v1Keys: Record<string, string | undefined> = {
  model: "model_name_or_path",
  custom_chat_template: "template (a built-in name), or no template to use the tokenizer's own chat_template",
  model_class: undefined,
  init_config: undefined,
  peft_config: "finetuning_type with the lora_* or freeze_* keys",
  kernel_config: undefined,
  quant_config: "quantization_bit",
  train_dataset: "dataset (names from dataset_info.json, or paths)",
  micro_batch_size: "per_device_train_batch_size",
  global_batch_size: "per_device_train_batch_size x gradient_accumulation_steps",
  batching_strategy: "packing or neat_packing",
  batching_workers: undefined,
  enable_activation_checkpointing: "disable_gradient_checkpointing (recomputation is on by default)",
  dist_config: undefined,
  dp_size: undefined,
  cp_size: undefined,
  cp_mode: undefined,
  mp_replicate_size: undefined,
  mp_shard_size: undefined,
  dist_timeout: "ddp_timeout",
  optim_config: "optim, adam_beta1, adam_beta2 and weight_decay",
  lr_scheduler_config: "lr_scheduler_type and lr_scheduler_kwargs",
  save_epochs: "save_strategy: epoch",
  save_ckpt_as_hf: undefined, // lmfactory's checkpoints are always Hugging Face folders
  sample_backend: "infer_backend",
};

const ACCELERATE = "an Accelerate launch-config key (`accelerate launch --config_file`), not a training argument";
const accelerateKeys = [
  "compute_environment",
  "distributed_type",
  "num_processes",
  "num_machines",
  "machine_rank",
  "main_process_ip",
  "main_process_port",
  "main_training_function",
  "rdzv_backend",
  "same_network",
  "downcast_bf16",
  "tpu_env",
  "tpu_use_cluster",
  "tpu_use_sudo",
] as const;

export const foreignKeys: Readonly<Record<string, ForeignKey>> = {
  ...Object.fromEntries(megatronKeys.map((key) => [key, { trainer: MEGATRON }])),
  // Both Megatron Bridge and Accelerate configs use it; in a training config it is Megatron Bridge's.
  mixed_precision: { trainer: MEGATRON, instead: "bf16 or fp16" },
  ...Object.fromEntries(Object.entries(v1Keys).map(([key, instead]) => [key, instead ? { trainer: V1, instead } : { trainer: V1 }])),
  ...Object.fromEntries(accelerateKeys.map((key) => [key, { trainer: ACCELERATE }])),
};
