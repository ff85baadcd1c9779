// Stage rm, LLaMA-Factory's run_rm with PairwiseTrainer: a value head (TRL's ValueHead, `v_head`)
// on the model's last hidden states scores each answer at its last non-pad token; the loss is
// −logσ(s_chosen − s_rejected), evaluation reports `accuracy` (s_chosen > s_rejected), the head is
// saved as value_head.safetensors beside the model or adapter (and in every checkpoint), and
// do_predict writes generated_predictions.jsonl with {"chosen", "rejected"} scores per pair.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { processorSpec } from "../../data/processors/factories.ts";
import { collatePairwise } from "../../data/processors/collator.ts";
import type { PairwiseRow } from "../../data/types.ts";
import { UserError } from "../../errors.ts";
import { ValueHead, loadValueHead, saveValueHead } from "../../model/value_head.ts";
import { type Tensor, noGrad, tensor, tidy } from "../../torch/index.ts";
import { saveMetrics } from "../logging.ts";
import { pairsIn } from "./dpo.ts";
import { hiddenStatesOf } from "./logprobs.ts";
import type { AttachContext, CollatedBatch, LossInputs, Stage, StageRun, TrainingExample } from "./stage.ts";

/** Python's repr of a float rounded to 2 places, as json.dumps writes LLaMA-Factory's scores. */
function pythonFloat(value: number): string {
  const rounded = Math.round(value * 100) / 100;
  if (Object.is(rounded, -0)) return "-0.0";
  return Number.isInteger(rounded) ? `${rounded}.0` : String(rounded);
}

function attach(context: AttachContext): StageRun {
  const { loaded, args, device, print } = context;
  const holder = { v_head: new ValueHead(loaded.model.config.hidden_size).to(device) };
  // LLaMA-Factory's load_valuehead_params: from the last adapter, else the model folder.
  const source = args.model.adapter_name_or_path?.at(-1) ?? loaded.modelFolder;
  if (loadValueHead(holder, source)) print(`value head loaded from ${source}`);

  /** Scores [2P] (float32): the value at each row's last non-pad token (right padding). */
  const scoresOf = (hidden: Tensor, attentionMask: number[][]): Tensor =>
    tidy(() => {
      const last = tensor(attentionMask.map((row) => [row.reduce((a, b) => a + b, 0) - 1]), { dtype: "int64", device });
      return holder.v_head.forward(hidden).gather(1, last).squeeze(1).to("float32");
    });
  const pairLosses = (scores: Tensor, pairs: number) => scores.narrow(0, 0, pairs).sub(scores.narrow(0, pairs, pairs)).logSigmoid().neg();
  const wins = (scores: number[], pairs: number) => scores.slice(0, pairs).filter((score, i) => score > scores[pairs + i]!).length;

  const loss = ({ model, hidden, batch, denominator, record }: LossInputs): Tensor =>
    tidy(() => {
      // The head's dropout follows the model: on in training, off in evaluation.
      holder.v_head.train(model.training);
      const pairs = pairsIn(batch);
      const scores = scoresOf(hidden, batch.attention_mask);
      if (!model.training) record("accuracy", wins(scores.toFlatArray(), pairs) / pairs, pairs);
      return pairLosses(scores, pairs).sum().div(denominator);
    });

  const predict = (_examples: unknown, rows: TrainingExample[]): void => {
    const { model } = loaded;
    model.eval();
    holder.v_head.eval();
    const batchSize = args.training.per_device_eval_batch_size;
    const lines: string[] = [];
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < rows.length; start += batchSize) {
      const batch: CollatedBatch = context.collate(rows.slice(start, start + batchSize));
      const pairs = pairsIn(batch);
      noGrad(() =>
        tidy(() => {
          const scores = scoresOf(hiddenStatesOf(model, batch, device), batch.attention_mask);
          lossSum += pairLosses(scores, pairs).sum().item();
          const values = scores.toFlatArray();
          correct += wins(values, pairs);
          for (let i = 0; i < pairs; i++) lines.push(`{"chosen": ${pythonFloat(values[i]!)}, "rejected": ${pythonFloat(values[pairs + i]!)}}`);
        }),
      );
    }
    mkdirSync(args.training.output_dir, { recursive: true });
    const out = join(args.training.output_dir, "generated_predictions.jsonl");
    writeFileSync(out, lines.join("\n"), "utf8");
    const metrics = { predict_loss: lossSum / Math.max(lines.length, 1), predict_accuracy: correct / Math.max(lines.length, 1) };
    saveMetrics(args.training.output_dir, "predict", metrics);
    print(`wrote ${out}: ${JSON.stringify(metrics)}`);
  };

  return {
    loss,
    parameters: holder.v_head.namedParameters().map(([name, value]) => [`v_head.${name}`, value]),
    save: (folder) => saveValueHead(holder, folder),
    restore: (folder) => {
      if (!loadValueHead(holder, folder)) throw new UserError(`the checkpoint ${folder} has no value_head.safetensors`, "resume_from_checkpoint", "resume from a checkpoint of an rm run");
    },
    predict,
    dispose: () => holder.v_head.dispose(),
  };
}

export const rm: Stage = {
  name: "rm",
  processor: (options) => processorSpec("makePairwiseProcessor", options),
  collate: (rows, options) => collatePairwise(rows as unknown as PairwiseRow[], options),
  lossDenominator: (batches) => batches.reduce((sum, batch) => sum + pairsIn(batch), 0),
  attach,
  plotKeys: ["loss", "eval_loss", "eval_accuracy"],
};
