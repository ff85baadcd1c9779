// ModelArguments: which checkpoint to load and how (LLaMA-Factory `hparams/model_args.py`), with
// its quantization, export, processor and inference-engine parts. Multimodal processors, vLLM,
// SGLang, KTransformers and mixture-of-depths are out of scope: they parse so upstream configs load.
import {
  type ArgsOf,
  bool,
  choice,
  defineGroup,
  derived,
  int,
  intChoice,
  float,
  optChoice,
  optFloat,
  optInt,
  optJson,
  optList,
  optStr,
  str,
} from "./schema.ts";

const nothingDownloaded = "models load from local folders or the local Hugging Face cache; nothing is downloaded";

const baseModel = {
  model_name_or_path: optStr("Local Hugging Face model folder (or a hub id already in the cache) to load."),
  adapter_name_or_path: optList(
    "Adapters to load on top of the model, comma-separated; they are merged in order and the last may be trained further.",
  ),
  adapter_folder: optStr("Folder that holds the adapter weights to load."),
  cache_dir: optStr("Where downloaded models are stored (Hugging Face cache layout)."),
  use_fast_tokenizer: bool(true, "Use the fast (tokenizers-library) tokenizer."),
  resize_vocab: bool(false, "Resize the embedding and output layers to the tokenizer's vocabulary size (a multiple of 64); tokens from add_tokens / add_special_tokens always resize."),
  split_special_tokens: bool(false, "Tokenize special-token strings as plain text instead of as single special tokens."),
  add_tokens: optList("Ordinary tokens to add to the tokenizer, comma-separated."),
  add_special_tokens: optList("Special tokens to add to the tokenizer, comma-separated.", {
    aliases: ["new_special_tokens"],
  }),
  new_special_tokens_config: optStr("YAML file mapping each new special token to a description, for semantic initialisation.", {
    tier: "later",
  }),
  init_special_tokens: choice(
    ["noise_init", "desc_init", "desc_init_w_noise"],
    "noise_init",
    "How to initialise new special-token embeddings: noise around the mean, from their descriptions, or both.",
    { tier: "later" },
  ),
  model_revision: str("main", "Branch, tag or commit of the model to use."),
  low_cpu_mem_usage: bool(true, "Load weights without keeping a second copy in memory.", {
    noEffect: "weights always stream tensor by tensor into the model, never as a second full copy",
  }),
  rope_scaling: optChoice(["linear", "dynamic", "yarn", "llama3"], "RoPE scaling strategy for longer contexts."),
  flash_attn: choice(["auto", "disabled", "sdpa", "fa2", "fa3"], "auto", "Attention kernel: auto picks the fastest available."),
  shift_attn: bool(false, "Use LongLoRA's shifted short attention (S^2-Attn) during training."),
  mixture_of_depths: optChoice(["convert", "load"], "Convert the model to mixture-of-depths or load one.", { tier: "out" }),
  use_unsloth: bool(false, "Use fused kernels for LoRA training (lmfactory: the engine's fused paths).", { tier: "later" }),
  use_unsloth_gc: bool(false, "Use the offloaded gradient-checkpointing variant.", { tier: "later" }),
  enable_liger_kernel: bool(false, "Use fused Liger-style kernels in training.", { tier: "later" }),
  moe_aux_loss_coef: optFloat("Weight of the mixture-of-experts router load-balancing loss added in training (Mixtral, Qwen2-MoE, Qwen3-MoE; DeepSeek-V2 as its aux_loss_alpha)."),
  disable_gradient_checkpointing: bool(false, "Turn activation recomputation off (faster, more memory)."),
  use_reentrant_gc: bool(true, "Recomputation style; accepted for compatibility.", {
    noEffect: "lmfactory recomputes each layer its own way; reentrant or not, the gradients are the same",
  }),
  upcast_layernorm: bool(false, "Keep norm-layer weights in fp32."),
  upcast_lmhead_output: bool(false, "Compute the output logits in fp32.", {
    noEffect: "training computes the loss on float32 logits in any case, as Hugging Face's loss does (same gradients, checked)",
  }),
  train_from_scratch: bool(false, "Initialise weights randomly from config.json instead of loading them."),
  infer_backend: choice(
    ["huggingface", "native", "llamacpp", "vllm", "sglang"],
    "huggingface",
    "Inference engine.",
    {
      noEffect: "lmfactory has one engine, its own; huggingface and native both name it",
      choiceTiers: { llamacpp: "later", vllm: "out", sglang: "out" },
    },
  ),
  offload_folder: str("offload", "Folder for weights offloaded from memory.", { tier: "later" }),
  use_kv_cache: bool(true, "Cache keys and values during generation (false recomputes the whole sequence each step: same text, slower)."),
  use_v1_kernels: bool(false, "Use LLaMA-Factory v1's high-performance training kernels.", { tier: "out" }),
  infer_dtype: choice(["auto", "float16", "bfloat16", "float32"], "auto", "Data type of weights and activations at inference."),
  hf_hub_token: optStr("Hugging Face Hub token (never logged or saved).", { noEffect: nothingDownloaded }),
  ms_hub_token: optStr("ModelScope Hub token (never logged or saved).", { noEffect: nothingDownloaded }),
  om_hub_token: optStr("Modelers Hub token (never logged or saved).", { noEffect: nothingDownloaded }),
  print_param_status: bool(false, "Print each parameter's dtype, device and whether it trains."),
  trust_remote_code: bool(false, "Allow the model folder's own Python code to run.", {
    noEffect: "no Python code is ever run: architectures are built in and picked by config.json's model_type",
  }),
};

const quantization = {
  quantization_method: choice(
    ["bnb", "bitsandbytes", "gptq", "awq", "aqlm", "quanto", "eetq", "hqq", "mxfp4", "fp8"],
    "bnb",
    "Method for on-the-fly quantization with quantization_bit: bnb (bitsandbytes' formats; `bitsandbytes` is its older name). " +
      "gptq, awq, aqlm, quanto, mxfp4 and fp8 name checkpoint formats, which load from config.json's quantization_config " +
      "(GPTQ works; the others are refused); hqq (1-8 bits) and eetq (8 bits) need their own kernels and are not built yet.",
    { choiceTiers: { hqq: "later", eetq: "later" } },
  ),
  quantization_bit: intChoice([4, 8], "Quantize the base model to this many bits while it loads (QLoRA): 4 (NF4/FP4) or 8 (LLM.int8 row-wise int8)."),
  quantization_type: choice(["fp4", "nf4"], "nf4", "Data type of 4-bit quantization."),
  double_quantization: bool(true, "Also quantize the 4-bit quantization constants (absmax) to 8 bits."),
  quantization_device_map: optChoice(["auto"], "Device map for inference with a 4-bit model.", {
    noEffect: "lmfactory keeps the whole model on one device (the CPU, or the one CUDA device), so there is no device map to choose",
  }),
};

const processor = {
  image_max_pixels: int(768 * 768, "Largest image size in pixels.", { tier: "out" }),
  image_min_pixels: int(32 * 32, "Smallest image size in pixels.", { tier: "out" }),
  image_do_pan_and_scan: bool(false, "Pan-and-scan image processing (Gemma 3).", { tier: "out" }),
  crop_to_patches: bool(false, "Crop images to patches (InternVL).", { tier: "out" }),
  video_max_pixels: int(256 * 256, "Largest video frame size in pixels.", { tier: "out" }),
  video_min_pixels: int(16 * 16, "Smallest video frame size in pixels.", { tier: "out" }),
  video_fps: float(2.0, "Frames sampled per second of video.", { tier: "out" }),
  video_maxlen: int(128, "Most frames sampled from one video.", { tier: "out" }),
  use_audio_in_video: bool(false, "Use the audio track of videos.", { tier: "out" }),
  audio_sampling_rate: int(16000, "Sampling rate of audio inputs.", { tier: "out" }),
};

const exportArgs = {
  export_dir: optStr("Folder `lmf export` writes the merged model to (written whole or not at all).", { tier: "now" }),
  export_size: int(5, "Shard size of the exported model, in GB.", { tier: "now", min: 1 }),
  export_device: choice(["cpu", "auto"], "cpu", "Device used while exporting: cpu, or auto for the GPU when there is one.", { tier: "now" }),
  export_quantization_bit: optInt("Quantize the exported model to this many bits with GPTQ (2, 3, 4 or 8; needs a calibration dataset).", {
    tier: "now",
    min: 1,
    max: 8,
  }),
  export_quantization_dataset: optStr("Calibration text for GPTQ export: a json/jsonl/csv/txt/parquet file (column `text`) or a dataset name.", { tier: "now" }),
  export_quantization_nsamples: int(128, "Calibration samples (random token windows) for GPTQ export.", { tier: "now", min: 1 }),
  export_quantization_maxlen: int(1024, "Token length of each calibration sample.", { tier: "now", min: 1 }),
  export_legacy_format: bool(false, "Write `.bin` files instead of safetensors.", { tier: "now" }),
  export_hub_model_id: optStr("Hub repository to upload the exported model to (lmfactory writes the folder and says it cannot push).", { tier: "now" }),
  // lmfactory's own keys (LLaMA-Factory asks users to run llama.cpp's converter for GGUF).
  export_format: choice(["hf", "gguf"], "hf", "What `lmf export` writes: a Hugging Face folder (hf) or one GGUF file for llama.cpp and Ollama (gguf)."),
  export_gguf_type: choice(
    ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"],
    "f16",
    "Tensor type of a GGUF export (llama.cpp's names; the k-quant mixes as llama-quantize makes them).",
  ),
  export_overwrite: bool(false, "Replace an existing non-empty export_dir, when it holds an earlier lmfactory export and nothing else."),
};

const otherEngines = {
  use_kt: bool(false, "Use the KTransformers back-end.", { tier: "out" }),
  kt_cpu_activation: optChoice(["retain", "recompute"], "KTransformers CPU activation policy.", { tier: "out" }),
  kt_weight_path: optStr("KTransformers expert weights.", { tier: "out" }),
  kt_non_expert_weight_path: optStr("KTransformers non-expert weights.", { tier: "out" }),
  kt_expert_checkpoint_path: optStr("KTransformers expert checkpoint.", { tier: "out" }),
  kt_use_lora_experts: bool(false, "KTransformers LoRA experts.", { tier: "out" }),
  kt_lora_expert_num: optInt("KTransformers LoRA expert count.", { tier: "out" }),
  kt_lora_expert_intermediate_size: optInt("KTransformers LoRA expert size.", { tier: "out" }),
  kt_config: optJson("KTransformers runtime config.", { tier: "out" }),
  vllm_maxlen: int(4096, "vLLM maximum sequence length.", { tier: "out" }),
  vllm_gpu_util: float(0.7, "vLLM GPU memory fraction.", { tier: "out" }),
  vllm_enforce_eager: bool(false, "Disable CUDA graphs in vLLM.", { tier: "out" }),
  vllm_max_lora_rank: int(32, "vLLM maximum LoRA rank.", { tier: "out" }),
  vllm_config: optJson("vLLM engine config.", { tier: "out" }),
  sglang_maxlen: int(4096, "SGLang maximum sequence length.", { tier: "out" }),
  sglang_mem_fraction: float(0.7, "SGLang memory fraction.", { tier: "out" }),
  sglang_tp_size: int(-1, "SGLang tensor-parallel size.", { tier: "out" }),
  sglang_config: optJson("SGLang engine config.", { tier: "out" }),
  sglang_lora_backend: choice(["triton", "flashinfer"], "triton", "SGLang LoRA kernels.", { tier: "out" }),
};

const derivedModel = {
  compute_dtype: derived<string | null>("str", null, "Compute dtype, derived from bf16/fp16/pure_bf16 or infer_dtype."),
  device_map: derived<string | null>("str", null, "Where weights are placed, derived from the command."),
  model_max_length: derived<number | null>("int", null, "Longest input, derived from cutoff_len."),
  block_diag_attn: derived<boolean>("bool", false, "Block-diagonal attention, derived from neat_packing."),
};

export const modelFields = { ...baseModel, ...quantization, ...exportArgs, ...processor, ...otherEngines, ...derivedModel };
export type ModelArguments = ArgsOf<typeof modelFields>;

/** LLaMA-Factory masks every key ending in `token` so hub tokens never reach logs. */
function maskTokens(values: Record<string, unknown>): Record<string, unknown> {
  const out = { ...values };
  for (const key of Object.keys(out)) if (key.endsWith("_token") && out[key] !== null) out[key] = `<${key.toUpperCase()}>`;
  return out;
}

export const modelGroup = defineGroup<typeof modelFields>(
  "ModelArguments",
  "model",
  [
    ["BaseModelArguments", baseModel],
    ["QuantizationArguments", quantization],
    ["ExportArguments", exportArgs],
    ["ProcessorArguments (multimodal, out of scope)", processor],
    ["vLLM / SGLang / KTransformers (out of scope)", otherEngines],
    ["Derived (set by lmfactory)", derivedModel],
  ],
  maskTokens,
);
