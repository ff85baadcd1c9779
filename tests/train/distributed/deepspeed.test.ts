// `deepspeed: <config>`: LLaMA-Factory's ZeRO configs run as the same training with one notice;
// values that disagree with the training arguments are refused as HF refuses them, "auto" takes
// the argument, and what would change the results is refused with what to remove.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type DeepSpeedTrainingValues, checkDeepSpeedConfig, readDeepSpeedConfig } from "../../../src/train/distributed/deepspeed.ts";

const VALUES: DeepSpeedTrainingValues = {
  perDeviceTrainBatchSize: 1,
  gradientAccumulationSteps: 2,
  worldSize: 2,
  maxGradNorm: 1,
  learningRate: 1e-5,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  weightDecay: 0,
  optim: "adamw_torch",
  bf16: true,
  fp16: false,
};

test("LLaMA-Factory's ds_z0 / ds_z2 / ds_z3 configs are accepted with one notice naming the stage and that nothing is sharded", () => {
  for (const [stage, file] of [[0, "ds_z0_config.json"], [2, "ds_z2_config.json"], [3, "ds_z3_config.json"]] as const) {
    const notice = checkDeepSpeedConfig(readDeepSpeedConfig(`examples/deepspeed/${file}`), VALUES);
    assert.match(notice, new RegExp(`^deepspeed \\(ZeRO stage ${stage}\\): lmfactory runs the same data-parallel training without DeepSpeed; parameters, gradients and optimizer states are not sharded`));
    assert.match(notice, /with bf16 the trainable weights and optimizer states stay float32 under bfloat16 autocast/);
  }
  const offload = { zero_optimization: { stage: 3, offload_optimizer: { device: "cpu" }, offload_param: { device: "cpu" } }, tensor_parallel: { autotp_size: 2 } };
  assert.match(checkDeepSpeedConfig(offload, { ...VALUES, bf16: false }), /^deepspeed \(ZeRO stage 3, offload_optimizer, offload_param, autotp_size 2\)/);
});

test("a DeepSpeed value that disagrees with its training argument is refused with HF's list; auto and equal values pass", () => {
  const config = { train_micro_batch_size_per_gpu: 2, gradient_accumulation_steps: 2, train_batch_size: 3, gradient_clipping: 0.5, bf16: { enabled: false } };
  assert.throws(
    () => checkDeepSpeedConfig(config, VALUES),
    (error: Error) => {
      assert.match(error.message, /- ds train_micro_batch_size_per_gpu=2 vs hf per_device_train_batch_size=1/);
      assert.match(error.message, /- ds train_batch_size=3 vs hf train_batch_size \(calculated: world size x per_device_train_batch_size x gradient_accumulation_steps\)=4/);
      assert.match(error.message, /- ds gradient_clipping=0.5 vs hf max_grad_norm=1/);
      assert.match(error.message, /- ds bf16.enabled=false vs hf bf16=true/);
      assert.doesNotMatch(error.message, /gradient_accumulation_steps=2 vs/);
      assert.match(error.message, /set these DeepSpeed config values to "auto"/);
      return true;
    },
  );
  const matching = { train_micro_batch_size_per_gpu: 1, train_batch_size: 4, gradient_clipping: "auto", bf16: { enabled: true }, optimizer: { type: "AdamW", params: { lr: "auto", betas: [0.9, 0.999], eps: 1e-8, weight_decay: "auto" } } };
  assert.doesNotThrow(() => checkDeepSpeedConfig(matching, VALUES));
  assert.throws(() => checkDeepSpeedConfig(matching, { ...VALUES, worldSize: 4 }), /ds train_batch_size=4 vs hf train_batch_size .*=8/);
});

test("what would change the results is refused: DeepSpeed's optimizer or schedule, low-precision gradient sums, elasticity, unknown keys", () => {
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ optimizer: { type: "Lamb", params: {} } }, /DeepSpeed's Lamb optimizer replaces `optim`.*remove the optimizer block/],
    [{ optimizer: { type: "Adam", params: { adam_w_mode: false } } }, /DeepSpeed's Adam optimizer replaces `optim`/],
    [{ scheduler: { type: "WarmupDecayLR", params: { warmup_num_steps: "auto" } } }, /DeepSpeed's WarmupDecayLR schedule replaces lr_scheduler_type.*remove the scheduler block/],
    [{ communication_data_type: "bf16" }, /communication_data_type "bf16" sums gradients in lower precision/],
    [{ data_types: { grad_accum_dtype: "bf16" } }, /data_types.grad_accum_dtype "bf16"/],
    [{ elasticity: { enabled: true } }, /DeepSpeed's `elasticity` changes the results \(elastic training changes the batch size/],
    [{ sequence_parallel_size: 2 }, /sequence_parallel_size 2 \(Ulysses sequence parallelism\) is not built/],
    [{ amp: { enabled: true } }, /apex AMP/],
    [{ zero_optimization: { stage: 4 } }, /ZeRO stage 4 does not exist/],
    [{ hybrid_engine: { enabled: true } }, /lmfactory does not know DeepSpeed's `hybrid_engine`.*remove `hybrid_engine`/],
  ];
  for (const [config, message] of refused) assert.throws(() => checkDeepSpeedConfig(config, VALUES), message, JSON.stringify(config));
  assert.throws(() => checkDeepSpeedConfig({ optimizer: { type: "AdamW" } }, { ...VALUES, optim: "sgd" }), /trains with AdamW while `optim` is sgd/);
  // Switched off, a result-changing feature is harmless; "_comment" keys are comments.
  assert.doesNotThrow(() => checkDeepSpeedConfig({ elasticity: { enabled: false }, _comment: "x", communication_data_type: "fp32" }, VALUES));
});

test("deepspeed is read from a path, a JSON string or a dict; a missing or broken file is named", () => {
  assert.equal((readDeepSpeedConfig("examples/deepspeed/ds_z3_config.json").zero_optimization as { stage: number }).stage, 3);
  assert.deepEqual(readDeepSpeedConfig('{"zero_optimization": {"stage": 2}}'), { zero_optimization: { stage: 2 } });
  assert.deepEqual(readDeepSpeedConfig({ zero_optimization: { stage: 1 } }), { zero_optimization: { stage: 1 } });
  assert.throws(() => readDeepSpeedConfig("no/such/ds.json"), /deepspeed: DeepSpeed config no\/such\/ds.json does not exist/);
  assert.throws(() => readDeepSpeedConfig("{not json"), /the DeepSpeed config is not valid JSON/);
});
