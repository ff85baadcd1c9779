// Stage sft, LLaMA-Factory's run_sft: supervised fine-tuning on the template's turns with the prompt
// masked; do_predict with predict_with_generate writes generated_predictions.jsonl and BLEU/ROUGE.
import { join } from "node:path";
import { processorSpec } from "../../data/processors/factories.ts";
import type { AlignedExample } from "../../data/types.ts";
import { computeSimilarity, writeGeneratedPredictions } from "../../eval/metrics.ts";
import type { TrainArgs } from "../../hparams/index.ts";
import { generationSettingsFromArgs } from "../../model/from_args.ts";
import { generate } from "../../model/generation.ts";
import type { LoadedModel } from "../../model/pretrained.ts";
import { saveMetrics } from "../logging.ts";
import { languageModeling } from "./language_modeling.ts";
import type { Stage } from "./stage.ts";

export const sft: Stage = {
  name: "sft",
  processor: (options) => processorSpec("makeSupervisedProcessor", options),
  ...languageModeling,
  computesAccuracy: true,
  predict,
};

/**
 * The generation settings of prediction, as LLaMA-Factory passes them: its gen_kwargs (the
 * generating arguments, always holding num_beams and max_new_tokens or max_length) go to
 * Seq2SeqTrainer.predict, which falls back to generation_num_beams (eval_num_beams) and
 * generation_max_length only where gen_kwargs leave those unset, so they never apply (the parameter
 * system declares them as having no effect).
 */
export function predictionSettings(args: TrainArgs) {
  const { generating } = args;
  return generationSettingsFromArgs(generating);
}

/** do_predict with predict_with_generate: the answer to each prompt, batch by batch. */
function predict(loaded: LoadedModel, examples: AlignedExample[], args: TrainArgs, print: (line: string) => void): void {
  const { training, data } = args;
  const { model, tokenizer, template } = loaded;
  model.eval();
  const stopIds = template.getStopTokenIds(tokenizer);
  const batchSize = training.per_device_eval_batch_size;
  const settings = predictionSettings(args);
  const rows: { prompt: string; predict: string; label: string }[] = [];
  for (let start = 0; start < examples.length; start += batchSize) {
    const batch = examples.slice(start, start + batchSize);
    const prompts = batch.map((example) => template.encodeOneturn(tokenizer, [...example._prompt, { role: "assistant", content: "" }], example._system, example._tools)[0]);
    const { sequences } = generate(
      model,
      prompts.map((p) => p.slice(-data.cutoff_len)),
      { ...settings, eosTokenId: stopIds, padTokenId: tokenizer.padTokenId ?? stopIds[0] },
    );
    batch.forEach((example, i) => {
      rows.push({
        prompt: tokenizer.decode(prompts[i]!, { skipSpecialTokens: false }),
        predict: tokenizer.decode(sequences[i]!, { skipSpecialTokens: true }),
        label: example._response[0]?.content ?? "",
      });
    });
    // The progress line is the prediction bar HF's disable_tqdm turns off.
    if (!training.disable_tqdm) print(`predicted ${rows.length}/${examples.length}`);
  }
  writeGeneratedPredictions(training.output_dir, rows);
  const metrics = computeSimilarity(rows.map((r) => r.predict), rows.map((r) => r.label));
  saveMetrics(training.output_dir, "predict", { ...metrics });
  print(`wrote ${join(training.output_dir, "generated_predictions.jsonl")}: ${JSON.stringify(metrics)}`);
}
