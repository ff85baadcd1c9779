// Loading as a user meets it: the Hugging Face cache layout, dtypes, upcast_layernorm, and one
// clear message for each kind of bad model folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isUserError } from "../../src/errors.ts";
import { resolveModelPath } from "../../src/model/hub.ts";
import { loadModel } from "../../src/model/loader.ts";
import { upcastLayernorm } from "../../src/model/patches/upcast.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import type { LlamaForCausalLM } from "../../src/model/models/llama.ts";

const userError = (pattern: RegExp) => (error: unknown) => isUserError(error) && pattern.test(error.message);

test("a hub id is found in a Hugging Face cache (refs/main -> snapshots/<commit>), else a clear error", () => {
  const cache = mkdtempSync(join(tmpdir(), "lmf-hub-"));
  const snapshot = join(cache, "models--org--tiny", "snapshots", "abc123");
  mkdirSync(join(cache, "models--org--tiny", "refs"), { recursive: true });
  writeFileSync(join(cache, "models--org--tiny", "refs", "main"), "abc123\n");
  cpSync(makeTinyModel(), snapshot, { recursive: true });
  assert.equal(resolveModelPath("org/tiny", { cacheDir: cache }), snapshot);
  assert.equal(resolveModelPath("org/tiny", { cacheDir: cache, revision: "abc123" }), snapshot);
  assert.throws(() => resolveModelPath("org/other", { cacheDir: cache }), userError(/'org\/other' is neither a local folder nor in a Hugging Face cache.*download the model first/));
});

test("weights load straight into bfloat16; upcast_layernorm keeps norms in float32 and the output in bfloat16", () => {
  const folder = makeTinyModel();
  const full = loadModel(folder);
  const half = loadModel(folder, { dtype: "bfloat16" });
  assert.equal((half as LlamaForCausalLM).model.layers[0]!.self_attn.q_proj.weight.dtype, "bfloat16");
  const changed = upcastLayernorm(half);
  assert.ok(changed.includes("model.norm.weight") && changed.includes("model.layers.1.post_attention_layernorm.weight"), changed.join(","));
  assert.equal((half as LlamaForCausalLM).model.norm.weight.dtype, "float32");
  const ids = tensor([[3, 14, 15, 92, 65]]);
  tidy(() =>
    noGrad(() => {
      const logits = half.forward(ids);
      assert.equal(logits.dtype, "bfloat16");
      const reference = full.forward(ids);
      const error = logits.to("float32").sub(reference).abs().max().item() / reference.abs().max().item();
      assert.ok(error < 0.05, `bf16 relative error ${error}`);
    }),
  );
  full.dispose();
  half.dispose();
});

test("bad model folders each give one clear message", () => {
  const unknownType = makeTinyModel();
  const config = JSON.parse(readFileSync(join(unknownType, "config.json"), "utf8"));
  writeFileSync(join(unknownType, "config.json"), JSON.stringify({ ...config, model_type: "gpt_neox" }));
  assert.throws(() => loadModel(unknownType), userError(/model_type 'gpt_neox' is not supported.*supported model types: llama, mistral, qwen2, qwen3/));

  const mismatched = makeTinyModel();
  writeFileSync(join(mismatched, "config.json"), JSON.stringify({ ...config, intermediate_size: 48 }));
  assert.throws(() => loadModel(mismatched), userError(/mlp\.\w+_proj\.weight has shape \[(64,32|32,64)\] in the checkpoint but \[(48,32|32,48)\] in the model built from config.json/));

  const missing = makeTinyModel();
  writeFileSync(join(missing, "config.json"), JSON.stringify({ ...config, num_hidden_layers: 3 }));
  assert.throws(() => loadModel(missing), userError(/the checkpoint lacks 9 weight\(s\) the model needs: model\.layers\.2\./));

  const noWeights = makeTinyModel();
  rmSync(join(noWeights, "model.safetensors"));
  assert.throws(() => loadModel(noWeights), userError(/no weights found.*train_from_scratch/));

  const truncated = makeTinyModel();
  truncateSync(join(truncated, "model.safetensors"), 2000);
  assert.throws(() => loadModel(truncated), (error: unknown) => isUserError(error) && /model\.safetensors/.test(error.message));

  assert.throws(() => loadModel(join(tmpdir(), "no-such-model-folder")), userError(/no config.json/));
  assert.throws(() => loadTokenizer(makeTinyModel()), (error: unknown) => isUserError(error) && /tokenizer/.test(error.message));
});
