// Stage kto, LLaMA-Factory's run_kto with CustomKTOTrainer over TRL's kto_loss: each example is a
// desirable or undesirable answer (`kto_tags`) with a mismatched KL completion; the policy's KL
// log-probs (without autograd) and the reference's give the KL estimate, the tagged answers the
// loss, weighted kto_chosen_weight / kto_rejected_weight, plus `pref_ftx` as LLaMA-Factory rescales
// it. Metrics: rewards/{chosen, rejected, margins}, logps/*, logits/* (means over the examples of
// each kind in a log window, as LLaMA-Factory sums and counts them) and kl. Dropout is off.
import { type FeedbackBatch, collateFeedback } from "../../data/processors/collator.ts";
import { processorSpec } from "../../data/processors/factories.ts";
import type { FeedbackRow } from "../../data/types.ts";
import { type Tensor, disableDropout, noGrad, tensor, tidy } from "../../torch/index.ts";
import { type LabelledRows, averaged, modelLogProbs, sequenceLogProbs } from "./logprobs.ts";
import { ktoLoss } from "./preference_losses.ts";
import { createReference } from "./reference.ts";
import type { AttachContext, LossInputs, Stage, StageRun } from "./stage.ts";

/** The KL rows of a batch, padded apart from the target rows. */
function klRows(batch: FeedbackBatch): LabelledRows {
  return { input_ids: batch.kl_input_ids, attention_mask: batch.kl_attention_mask, labels: batch.kl_labels };
}

function indicesWhere(tags: boolean[], wanted: boolean): number[] {
  return tags.flatMap((tag, i) => (tag === wanted ? [i] : []));
}

function attach(context: AttachContext): StageRun<FeedbackBatch> {
  const { finetuning } = context.args;
  disableDropout(context.loaded.model);
  const reference = createReference(context);
  const reportRewards = reference.kind !== "policy";

  const loss = ({ model, hidden, batch, denominator, record }: LossInputs<FeedbackBatch>): Tensor =>
    tidy(() => {
      const examples = batch.input_ids.length;
      const device = hidden.device;
      const chosen = indicesWhere(batch.kto_tags, true);
      const rejected = indicesWhere(batch.kto_tags, false);
      const pick = (values: Tensor, rows: number[]) => values.indexSelect(0, tensor(rows, { dtype: "int64", device }));
      // Without autograd: the reference on both row sets, the policy on the KL rows.
      const ref = reference.logps(batch);
      const refKl = reference.logps(klRows(batch));
      const policyKl = noGrad(() => modelLogProbs(model, klRows(batch), device));
      const logits = model.logits(hidden).to("float32"); // [N, T, V]
      const policy = sequenceLogProbs(logits, batch.labels);
      const result = ktoLoss(
        { chosen: pick(policy.logps, chosen), rejected: pick(policy.logps, rejected), kl: policyKl.logps },
        { chosen: pick(ref.logps, chosen), rejected: pick(ref.logps, rejected), kl: refKl.logps },
        { beta: finetuning.pref_beta, desirableWeight: finetuning.kto_chosen_weight, undesirableWeight: finetuning.kto_rejected_weight },
      );
      let batchLoss = result.losses.mean();
      if (finetuning.pref_ftx > 1e-6 && chosen.length > 0) {
        // LLaMA-Factory: ftx · mean(−chosen average log-prob) / chosen · batch ("remember to rescale").
        const chosenAverage = averaged(pick(policy.logps, chosen), chosen.map((i) => policy.validLength[i]!));
        batchLoss = batchLoss.add(chosenAverage.neg().mean().mul((finetuning.pref_ftx * examples) / chosen.length));
      }

      // LLaMA-Factory sums each kind's values and counts over a log window: weighted means here.
      const rowLogitSums = logits.sum([1, 2]).toFlatArray(); // [N]
      const logps = policy.logps.toFlatArray();
      for (const [kind, rows, rewards] of [
        ["chosen", chosen, result.chosenRewards],
        ["rejected", rejected, result.rejectedRewards],
      ] as const) {
        if (rows.length === 0) continue;
        const mean = (values: number[]) => rows.reduce((sum, i) => sum + values[i]!, 0) / rows.length;
        if (reportRewards) record(`rewards/${kind}`, rewards.mean().item(), rows.length);
        record(`logps/${kind}`, mean(logps), rows.length);
        record(`logits/${kind}`, mean(rowLogitSums), rows.length);
      }
      record("kl", result.kl.item());
      return batchLoss.mul(examples / denominator);
    });
  return { loss, dispose: () => reference.dispose() };
}

export const kto: Stage<FeedbackBatch> = {
  name: "kto",
  processor: (options) => processorSpec("makeFeedbackProcessor", options),
  collate: (rows, options) => collateFeedback(rows as unknown as FeedbackRow[], options),
  lossDenominator: (batches) => batches.reduce((sum, batch) => sum + batch.input_ids.length, 0),
  attach,
  deriveMetrics: (means): Record<string, number> =>
    means["rewards/chosen"] !== undefined && means["rewards/rejected"] !== undefined ? { "rewards/margins": means["rewards/chosen"] - means["rewards/rejected"] } : {},
  plotKeys: ["loss", "rewards/chosen", "eval_loss"],
};
