// The reference model of dpo and kto, chosen as LLaMA-Factory's create_ref_model and run_dpo /
// run_kto choose it: `ref_model` (+ `ref_model_adapters`, merged) loaded frozen; else, evaluating
// without training, the policy itself; else with LoRA the policy with its adapters disabled (PEFT's
// disable_adapter: no second copy in memory); else (full, freeze) a frozen copy of the base model.
// Its log-probabilities are computed without autograd.
import { UserError } from "../../errors.ts";
import { appliedLoraConfig, withAdaptersDisabled } from "../../model/adapters/index.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import { modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../../model/from_args.ts";
import { type LoadedTokenizer, loadModelFor, loadTokenizerAndTemplate } from "../../model/pretrained.ts";
import { disableDropout, noGrad } from "../../torch/index.ts";
import { type LabelledRows, type SequenceLogProbs, modelLogProbs } from "./logprobs.ts";
import type { AttachContext } from "./stage.ts";

export interface Reference {
  /** How the reference was made, for the log. */
  readonly kind: "ref_model" | "policy" | "adapters_disabled" | "base_copy";
  /** Sequence log-probabilities of `rows` under the reference, without autograd. */
  logps(rows: LabelledRows): SequenceLogProbs;
  dispose(): void;
}

/**
 * Loads a frozen model for inference from `folder` (with its adapters merged), as the reference
 * (or PPO's full reward model); `quantizationBit`, when given, replaces the run's quantization_bit
 * (LLaMA-Factory's ModelArguments.copyfrom with ref_model_quantization_bit or
 * reward_model_quantization_bit); undefined keeps it.
 */
export function loadFrozen(context: AttachContext, folder: string | null, adapters: string[] | null, quantizationBit?: number | null): CausalLM {
  const { device, dtype, print, loaded } = context;
  const args = quantizationBit === undefined ? context.args : { ...context.args, model: { ...context.args.model, quantization_bit: quantizationBit } };
  const tokenizer: LoadedTokenizer = folder === null ? loaded : loadTokenizerAndTemplate(tokenizerOptionsFromArgs({ ...args, model: { ...args.model, model_name_or_path: folder } }));
  const options = modelOptionsFromArgs(args, { dtype, device, training: false, modelMaxLength: args.data.cutoff_len, print });
  // LLaMA-Factory loads it with fresh FinetuningArguments (LoRA, not trainable): adapters are merged.
  const { model } = loadModelFor(tokenizer, { ...options, printParamStatus: false, finetuning: { finetuningType: "lora", adapterNameOrPath: adapters, isTrainable: false } });
  const want = loaded.model.outputEmbeddings().weight.shape[0];
  const got = model.outputEmbeddings().weight.shape[0];
  if (got !== want) {
    model.dispose();
    throw new UserError(
      `the reference model has a vocabulary of ${got} tokens, the trained model ${want}`,
      "ref_model",
      "use a reference model with the trained model's tokenizer",
    );
  }
  return model;
}

/** The reference of a dpo/kto run (see the file comment). Dropout is off in it, as TRL does. */
export function createReference(context: AttachContext): Reference {
  const { args, loaded, device, print } = context;
  const { finetuning, training } = args;
  const policy = loaded.model;
  const frozen = (model: CausalLM, kind: "ref_model" | "base_copy"): Reference => {
    disableDropout(model);
    return { kind, logps: (rows) => noGrad(() => modelLogProbs(model, rows, device)), dispose: () => model.dispose() };
  };
  if (finetuning.ref_model) {
    const bits = finetuning.ref_model_quantization_bit;
    const adapters = finetuning.ref_model_adapters?.length ? ` with adapters ${finetuning.ref_model_adapters.join(", ")}` : "";
    print(`reference model: ${finetuning.ref_model}${adapters} (frozen${bits !== null ? `, quantized to ${bits} bits` : ""})`);
    return frozen(loadFrozen(context, finetuning.ref_model, finetuning.ref_model_adapters, bits), "ref_model");
  }
  if (!training.do_train) {
    print("reference model: the model itself (evaluation without training and without ref_model: rewards are not reported)");
    return { kind: "policy", logps: (rows) => noGrad(() => modelLogProbs(policy, rows, device)), dispose: () => {} };
  }
  if (finetuning.finetuning_type === "lora") {
    if (appliedLoraConfig(policy)?.modules_to_save?.length) {
      throw new UserError(
        "the adapter-disabled reference model cannot undo additional_target modules, which train in place",
        "additional_target",
        "set ref_model to the base model folder (a frozen copy is loaded), or drop additional_target",
      );
    }
    print("reference model: the trained model with its LoRA adapters disabled");
    return { kind: "adapters_disabled", logps: (rows) => noGrad(() => withAdaptersDisabled(policy, () => modelLogProbs(policy, rows, device))), dispose: () => {} };
  }
  print(`reference model: a frozen copy of ${args.model.model_name_or_path}`);
  return frozen(loadFrozen(context, null, null), "base_copy");
}
