// Stage dpo, LLaMA-Factory's run_dpo with CustomDPOTrainer: pairwise batches (all chosen rows, then
// all rejected), the policy's and the reference's sequence log-probs, the `pref_loss` chosen
// (sigmoid, hinge, ipo, kto_pair against a reference; orpo, simpo without one), the BCO mix
// (`pref_bco_weight`) and the SFT term (`pref_ftx`), and its metrics: rewards/{chosen, rejected,
// accuracies, margins}, logps/{chosen, rejected}, logits/{chosen, rejected} (+ ORPO's sft_loss and
// odds_ratio_loss). Dropout is off, as TRL's DPOTrainer does.
import { processorSpec } from "../../data/processors/factories.ts";
import { collatePairwise } from "../../data/processors/collator.ts";
import type { PairwiseRow } from "../../data/types.ts";
import { type Tensor, cat, disableDropout, tidy } from "../../torch/index.ts";
import { averaged, sequenceLogProbs } from "./logprobs.ts";
import { type ReferenceLoss, RunningMean, bcoLoss, dpoLoss, orpoLoss, simpoLoss } from "./preference_losses.ts";
import { createReference } from "./reference.ts";
import type { AttachContext, CollatedBatch, LossInputs, Stage, StageRun } from "./stage.ts";

/** Loss types LLaMA-Factory computes on log-probs averaged over each answer's tokens. */
const AVERAGED = new Set(["ipo", "orpo", "simpo"]);
/** Loss types without a reference model (LLaMA-Factory's use_ref_model is false for them). */
const REFERENCE_FREE = new Set(["orpo", "simpo"]);

/** Examples in a pairwise batch: its rows are the chosen then the rejected answers. */
export const pairsIn = (batch: CollatedBatch): number => batch.input_ids.length / 2;

/** The chosen half and the rejected half of a [2P] tensor. */
function halves(all: Tensor, pairs: number): { chosen: Tensor; rejected: Tensor } {
  return { chosen: all.narrow(0, 0, pairs), rejected: all.narrow(0, pairs, pairs) };
}

function attach(context: AttachContext): StageRun {
  const { finetuning } = context.args;
  const lossType = finetuning.pref_loss;
  const beta = finetuning.pref_beta;
  const average = AVERAGED.has(lossType);
  disableDropout(context.loaded.model);
  const reference = REFERENCE_FREE.has(lossType) ? null : createReference(context);
  // Against the policy itself every reward is 0: LLaMA-Factory drops them from the metrics.
  const reportRewards = reference?.kind !== "policy";
  const bcoWeight = finetuning.pref_bco_weight;
  const baseline = reference && bcoWeight >= 1e-6 ? new RunningMean() : null;

  const loss = ({ model, hidden, batch, denominator, record }: LossInputs): Tensor =>
    tidy(() => {
      const pairs = pairsIn(batch);
      // The reference first, so its logits are gone before the policy's are made.
      const ref = reference?.logps(batch);
      const logits = model.logits(hidden).to("float32"); // [2P, T, V]
      const policy = sequenceLogProbs(logits, batch.labels, finetuning.ld_alpha);
      const policyLogps = halves(average ? averaged(policy.logps, policy.validLength) : policy.logps, pairs);
      const chosenAverage = average ? policyLogps.chosen : averaged(policyLogps.chosen, policy.validLength.slice(0, pairs));
      const sftLosses = chosenAverage.neg();

      let result;
      let batchLoss: Tensor;
      if (lossType === "orpo") {
        result = orpoLoss(policyLogps.chosen, policyLogps.rejected, beta);
        batchLoss = result.losses.mean();
      } else if (lossType === "simpo") {
        result = simpoLoss(policyLogps.chosen, policyLogps.rejected, beta, finetuning.simpo_gamma);
        batchLoss = result.losses.mean();
      } else {
        const refLogps = halves(average ? averaged(ref!.logps, ref!.validLength) : ref!.logps, pairs);
        result = dpoLoss(lossType as ReferenceLoss, policyLogps, refLogps, { beta, labelSmoothing: finetuning.dpo_label_smoothing });
        batchLoss = result.losses.mean();
        if (baseline) {
          const delta = baseline.update(cat([result.chosenRewards, result.rejectedRewards]).mean().item());
          batchLoss = batchLoss.add(bcoLoss(policyLogps, refLogps, beta, delta).mean().mul(bcoWeight)).div(1 + bcoWeight);
        }
      }
      if (finetuning.pref_ftx > 1e-6) batchLoss = batchLoss.add(sftLosses.mean().mul(finetuning.pref_ftx));

      const { chosenRewards, rejectedRewards } = result;
      if (reportRewards) {
        record("rewards/chosen", chosenRewards.mean().item());
        record("rewards/rejected", rejectedRewards.mean().item());
        record("rewards/accuracies", chosenRewards.gt(rejectedRewards).to("float32").mean().item());
        record("rewards/margins", chosenRewards.sub(rejectedRewards).mean().item());
      }
      record("logps/chosen", policyLogps.chosen.mean().item());
      record("logps/rejected", policyLogps.rejected.mean().item());
      record("logits/chosen", logits.narrow(0, 0, pairs).mean().item());
      record("logits/rejected", logits.narrow(0, pairs, pairs).mean().item());
      if (lossType === "orpo") {
        const sft = sftLosses.mean().item();
        record("sft_loss", sft);
        record("odds_ratio_loss", (batchLoss.item() - sft) / beta);
      }
      // The batch's mean loss weighted by its pairs: summed over a group, the mean over its pairs.
      return batchLoss.mul(pairs / denominator);
    });
  return { loss, dispose: () => reference?.dispose() };
}

export const dpo: Stage = {
  name: "dpo",
  processor: (options) => processorSpec("makePairwiseProcessor", options),
  collate: (rows, options) => collatePairwise(rows as unknown as PairwiseRow[], options),
  lossDenominator: (batches) => batches.reduce((sum, batch) => sum + pairsIn(batch), 0),
  attach,
  plotKeys: ["loss", "rewards/accuracies", "eval_loss"],
};
