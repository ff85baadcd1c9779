// Each model family trains, evaluates and chats as the Llama family does: a short LoRA SFT run from
// the family's LLaMA-Factory-style YAML in examples/ on a tiny model of that family (the loss falls,
// the PEFT adapter names HF's modules), then the chat engine answers with the family's template.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { openSafetensors } from "../../src/torch/index.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

interface Family {
  name: string;
  yaml: string;
  /** config.json of a tiny model of the family (on top of tests/fixtures/tiny_model.ts's). */
  config: Record<string, unknown>;
  /** Module names the adapter must hold LoRA weights for (suffixes of PEFT keys). */
  loraModules: string[];
  /** A piece of the chat prompt the family's template renders. */
  promptPiece: string;
}

const FAMILIES: Family[] = [
  {
    name: "gemma3_text",
    yaml: "examples/train_lora/gemma3_lora_sft.yaml",
    config: { model_type: "gemma3_text", head_dim: 8, query_pre_attn_scalar: 8, sliding_window: 8, sliding_window_pattern: 2 },
    loraModules: ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"],
    promptPiece: "<start_of_turn>user\n",
  },
  {
    name: "phi3",
    yaml: "examples/train_lora/phi4_mini_lora_sft.yaml",
    config: { model_type: "phi3", partial_rotary_factor: 0.5, original_max_position_embeddings: 128 },
    loraModules: ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
    promptPiece: "<|user|>Count to 2.<|end|><|assistant|>",
  },
  {
    name: "mixtral",
    yaml: "examples/train_lora/mixtral_lora_sft.yaml",
    config: { model_type: "mixtral", num_local_experts: 4, num_experts_per_tok: 2, intermediate_size: 24 },
    loraModules: ["self_attn.q_proj", "self_attn.v_proj", "block_sparse_moe.experts.0.w1", "block_sparse_moe.experts.3.w2", "block_sparse_moe.experts.2.w3"],
    promptPiece: "[INST] Count to 2.[/INST]",
  },
  {
    name: "qwen2_moe",
    yaml: "examples/train_lora/qwen2_moe_lora_sft.yaml",
    config: { model_type: "qwen2_moe", num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, shared_expert_intermediate_size: 24 },
    loraModules: ["self_attn.q_proj", "mlp.gate", "mlp.experts.0.gate_proj", "mlp.experts.3.down_proj", "mlp.shared_expert.up_proj", "mlp.shared_expert_gate"],
    promptPiece: "<|im_start|>user\nCount to 2.<|im_end|>\n<|im_start|>assistant\n",
  },
  {
    name: "qwen3_moe",
    yaml: "examples/train_lora/qwen3_moe_lora_sft.yaml",
    config: { model_type: "qwen3_moe", num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, norm_topk_prob: true },
    loraModules: ["self_attn.k_proj", "mlp.experts.1.up_proj", "mlp.experts.2.down_proj"],
    promptPiece: "<|im_start|>user\nCount to 2.<|im_end|>\n<|im_start|>assistant\n",
  },
  {
    name: "glm4",
    yaml: "examples/train_lora/glm4_lora_sft.yaml",
    config: { model_type: "glm4", head_dim: 8, attention_bias: true, partial_rotary_factor: 0.5 },
    loraModules: ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
    promptPiece: "<|user|>\nCount to 2.<|assistant|>",
  },
  {
    name: "deepseek_v2",
    yaml: "examples/train_lora/deepseek_v2_lora_sft.yaml",
    config: { model_type: "deepseek_v2", q_lora_rank: null, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, moe_intermediate_size: 16, first_k_dense_replace: 1 },
    loraModules: ["self_attn.q_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj", "mlp.experts.3.gate_proj", "mlp.shared_experts.down_proj", "mlp.down_proj"],
    promptPiece: "User: Count to 2.\n\nAssistant:",
  },
];

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-fam-data-"));
  const rows = Array.from({ length: 16 }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}.`, input: "", output: ["one", "one two", "one two three", "one two three four"][i % 4] }));
  writeFileSync(join(dir, "alpaca.json"), JSON.stringify(rows));
  writeFileSync(join(dir, "dataset_info.json"), JSON.stringify({ alpaca: { file_name: "alpaca.json" } }));
  return dir;
}

const DATA = dataDir();
const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

for (const family of FAMILIES) {
  test(`${family.name}: LoRA SFT from ${family.yaml} lowers the loss, saves HF module names, and chats with its template`, async () => {
    const model = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null, ...family.config });
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(model, file), readFileSync(join("examples/demo/tiny-llama", file)));
    const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-fam-")), "out");
    const args = parseTrainArgs(
      [
        family.yaml,
        `model_name_or_path=${model}`,
        `dataset_dir=${DATA}`,
        "dataset=alpaca",
        `output_dir=${outputDir}`,
        // The tiny tokenizer lacks the family template's special tokens: resize_vocab grows the embeddings for them.
        "resize_vocab=true",
        "cutoff_len=64",
        "max_samples=16",
        "per_device_train_batch_size=4",
        "gradient_accumulation_steps=1",
        "learning_rate=1.0e-2",
        "max_steps=12",
        "warmup_ratio=0",
        "lr_scheduler_type=constant",
        "logging_steps=1",
        "save_steps=100",
        "val_size=4",
        "eval_steps=6",
        "bf16=false",
        "plot_loss=false",
      ],
      { onWarning: () => {} },
    );
    await runTrain(args, { print: () => {} });
    const log = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line));
    const losses = log.filter((row) => typeof row.loss === "number").map((row) => row.loss as number);
    assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
    assert.ok(log.some((row) => typeof row.eval_loss === "number"), "evaluated during training");

    const reader = openSafetensors(join(outputDir, "adapter_model.safetensors"));
    const keys = reader.names();
    reader.close();
    for (const module of family.loraModules) {
      assert.ok(keys.some((key) => key.endsWith(`.${module}.lora_A.weight`)), `no LoRA on ${module}: ${keys.slice(0, 6).join(", ")}`);
    }
    assert.ok(keys.every((key) => key.startsWith("base_model.model.model.layers.")), "PEFT keys");

    const chat = ChatModel.load({ modelNameOrPath: model, adapterNameOrPath: [outputDir], template: args.data.template });
    const messages = [{ role: "user" as const, content: "Count to 2." }];
    assert.ok(chat.tokenizer.decode(chat.promptIds(messages)).includes(family.promptPiece), "the family's template");
    const [answer] = chat.chat([messages], { maxNewTokens: 8, doSample: false });
    assert.ok(answer!.completionTokens > 0);
    chat.dispose();
  });
}

test("moe_aux_loss_coef: the router loss joins the training loss with that weight, and only in training", async () => {
  const model = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null, model_type: "qwen3_moe", num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(model, file), readFileSync(join("examples/demo/tiny-llama", file)));
  const firstLoss = async (coefficient: number | null, gradientCheckpointing: boolean) => {
    const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-moe-")), "out");
    const overrides = coefficient === null ? {} : { moe_aux_loss_coef: coefficient };
    const args = parseTrainArgs(
      { model_name_or_path: model, stage: "sft", do_train: true, finetuning_type: "lora", dataset_dir: DATA, dataset: "alpaca", template: "qwen3_nothink", cutoff_len: 64, output_dir: outputDir, per_device_train_batch_size: 4, max_steps: 1, logging_steps: 1, save_strategy: "no", disable_gradient_checkpointing: !gradientCheckpointing, ...overrides },
      { onWarning: () => {} },
    );
    const lines: string[] = [];
    await runTrain(args, { print: (line) => lines.push(line) });
    const log = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line));
    return { loss: log[0].loss as number, lines };
  };
  const plain = await firstLoss(null, false);
  const half = await firstLoss(0.5, false);
  const one = await firstLoss(1.0, true);
  const aux = one.loss - plain.loss;
  // E · Σ_e f_e · P_e with Σ_e f_e = k: k = 2 when perfectly balanced, at most E · k = 8.
  assert.ok(aux > 1 && aux <= 8, `aux ${aux}`);
  assert.ok(Math.abs((half.loss - plain.loss) - 0.5 * aux) < 1e-4, `0.5 x aux: ${half.loss - plain.loss} vs ${0.5 * aux}`);
  assert.ok(half.lines.some((line) => /moe_aux_loss_coef: the router load-balancing loss joins the training loss with weight 0.5/.test(line)));
});
