// What a training stage declares (LLaMA-Factory's run_pt / run_sft / run_rm / run_dpo / ... as
// data): its dataset processor and collator, its loss from the model's last hidden states and the
// batch, the weight of a batch in the loss mean, its evaluation metrics, and what it predicts; a
// stage that needs parts around the model (rm's value head, dpo/kto's reference model) builds them
// in `attach`. The workflow runs any stage in the same order; the trainer calls the loss on its one
// forward path.
import type { ProcessorOptions, ProcessorSpec } from "../../data/processors/factories.ts";
import type { AlignedExample } from "../../data/types.ts";
import type { TrainArgs } from "../../hparams/index.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import type { LoadedModel } from "../../model/pretrained.ts";
import type { ProgressBar } from "../../terminal/progress.ts";
import type { DType, Tensor } from "../../torch/index.ts";

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
  /**
   * Records a metric of this batch: the logged value is the mean over the batches of a log window or
   * an evaluation, each weighing `weight` (1 by default; e.g. the examples a mean was taken over).
   */
  record: (name: string, value: number, weight?: number) => void;
  /** Evaluation asks for the stage's prediction metrics too (compute_accuracy without prediction_loss_only). */
  predictionMetrics?: boolean;
}

/** What `attach` gets: the loaded policy, the arguments, where the run computes, the run's collator. */
export interface AttachContext<Batch extends CollatedBatch = CollatedBatch> {
  loaded: LoadedModel;
  collate(rows: TrainingExample[]): Batch;
  args: TrainArgs;
  /** The policy's device and weight dtype, for models the stage loads beside it. */
  device: string;
  dtype: DType;
  print: (line: string) => void;
}

/** What a stage with its own loop (ppo) gets from the workflow: the rows, how to save, where notices go. */
export interface OwnLoopParts {
  rows: TrainingExample[];
  /** Writes the trained weights (adapter or model), the stage's files and the tokenizer into a folder. */
  saveModel(folder: string): void;
  warn: (line: string) => void;
  progressBar: ProgressBar | null;
}

/** What a stage runs with for one run: its loss bound to the parts it built, and their upkeep. */
export interface StageRun<Batch extends CollatedBatch = CollatedBatch> {
  loss(inputs: LossInputs<Batch>): Tensor;
  /** Trainable parameters outside the model (rm's value head), named as saved; the optimizer takes them too. */
  parameters?: [string, Tensor][];
  /** Writes the stage's own files beside the saved model or adapter (value_head.safetensors), in output_dir and each checkpoint. */
  save?(folder: string): void;
  /** Reads them back from a checkpoint (resume). */
  restore?(folder: string): void;
  /** do_predict on the evaluation set (else the training set): aligned examples and their processed rows. */
  predict?(examples: AlignedExample[], rows: TrainingExample[]): void;
  /** The stage's own training loop, run instead of the trainer's (PPO: rollouts, scores, optimisation epochs). */
  train?(parts: OwnLoopParts): Promise<void>;
  /** Frees what the stage loaded (a reference model). */
  dispose?(): void;
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
  /** The loss of one batch, a scalar with a graph to the trainable weights (stages without `attach`). */
  loss?(inputs: LossInputs<Batch>): Tensor;
  /** Builds the stage's parts around the loaded model (a value head, a reference model) and its loss over them. */
  attach?(context: AttachContext<Batch>): StageRun<Batch>;
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
  /** Metrics worked out from a log window's (or an evaluation's) recorded means, unprefixed (KTO's reward margin). */
  deriveMetrics?(means: Record<string, number>): Record<string, number>;
  /** What plot_loss draws, LLaMA-Factory's keys for the stage (default: loss, eval_loss). */
  plotKeys?: readonly string[];
  /** do_predict: writes the stage's predictions into output_dir. */
  predict?(loaded: LoadedModel, examples: AlignedExample[], args: TrainArgs, print: (line: string) => void): void;
}

/** The trainer's view of a stage: a loss, how batches weigh, and how logged metrics are finished. */
export type StageLoss<Batch extends CollatedBatch = CollatedBatch> = Pick<StageRun<Batch>, "loss"> &
  Pick<Stage<Batch>, "lossDenominator" | "deriveMetrics" | "plotKeys">;

/** The stage's run parts: `attach` where the stage builds some, else its plain loss and predict. */
export function attachStage<Batch extends CollatedBatch>(stage: Stage<Batch>, context: AttachContext<Batch>): StageRun<Batch> {
  if (stage.attach) return stage.attach(context);
  const { loss, predict } = stage;
  if (!loss) throw new Error(`stage ${stage.name} declares neither loss nor attach`);
  return { loss, predict: predict && ((examples) => predict(context.loaded, examples, context.args, context.print)) };
}
