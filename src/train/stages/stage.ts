// What a training stage declares (LLaMA-Factory's run_pt / run_sft / run_rm / run_dpo / ... as
// data): its dataset processor and collator, its loss from the model's last hidden states and the
// batch, the weight of a batch in the loss mean, its evaluation metrics, and what it predicts.
// The workflow runs any stage in the same order; the trainer calls `loss` on its one forward path.
import type { ProcessorOptions, ProcessorSpec } from "../../data/processors/factories.ts";
import type { AlignedExample } from "../../data/types.ts";
import type { TrainArgs } from "../../hparams/index.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import type { LoadedModel } from "../../model/pretrained.ts";
import type { Tensor } from "../../torch/index.ts";

/** A padded batch [B, T] of each field; stages may carry more fields. */
export interface CollatedBatch {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  /** Packed rows: positions restart at 0 in each packed example. */
  position_ids?: number[][];
}

/** A processed example, as the data pipeline's processors produce it. */
export interface TrainingExample {
  input_ids: number[];
  attention_mask: number[];
  labels: number[];
  position_ids?: number[];
}

export interface CollateOptions {
  padTokenId: number;
  labelPadTokenId: number;
  padToMultipleOf: number | null;
}

export interface LossInputs<Batch extends CollatedBatch = CollatedBatch> {
  model: CausalLM;
  /** The model's last, normed hidden states [B, T, C] for the batch. */
  hidden: Tensor;
  batch: Batch;
  /** The batch's `labels` as a tensor on the model's device. */
  labels: Tensor;
  /** What the summed loss is divided by (see `lossDenominator`). */
  denominator: number;
  /** Records a metric of this batch (averaged over the batches of a log or an evaluation). */
  record: (name: string, value: number) => void;
  /** Evaluation asks for the stage's prediction metrics too (compute_accuracy without prediction_loss_only). */
  predictionMetrics?: boolean;
}

export interface Stage<Batch extends CollatedBatch = CollatedBatch> {
  name: string;
  /** The processor that turns aligned examples into rows, rebuilt on each worker thread. */
  processor(options: ProcessorOptions): ProcessorSpec;
  collate(rows: TrainingExample[], options: CollateOptions): Batch;
  /**
   * What the summed loss of a group of batches is divided by, so that summed over the group it is
   * the group's mean: the trained tokens for a causal LM (transformers' num_items_in_batch).
   */
  lossDenominator(batches: readonly Batch[]): number;
  /** The loss of one batch, a scalar with a graph to the trainable weights. */
  loss(inputs: LossInputs<Batch>): Tensor;
  /** Rows are packed into cutoff_len blocks unless `packing` says otherwise (pt). */
  packsByDefault?: boolean;
  /**
   * The stage records `accuracy` per example when `predictionMetrics` is asked (compute_accuracy:
   * LLaMA-Factory's ComputeAccuracy, which only run_sft installs).
   */
  computesAccuracy?: boolean;
  /** The tokens `include_effective_tokens_per_second` counts in a set of rows (LLaMA-Factory's calculate_tps). */
  effectiveTokens?(rows: readonly TrainingExample[]): number;
  /** Metrics derived from the evaluation loss (perplexity for language modelling). */
  evalMetrics?(evalLoss: number): Record<string, number>;
  /** do_predict: writes the stage's predictions into output_dir. */
  predict?(loaded: LoadedModel, examples: AlignedExample[], args: TrainArgs, print: (line: string) => void): void;
}
