// model_type -> architecture. A family that differs from Llama by a flag is an alias row here;
// one that needs more gets its own file under models/.
import { UserError } from "../errors.ts";
import type { BuildOptions, CausalLM } from "./causal_lm.ts";
import type { ModelConfig } from "./config.ts";
import { GemmaForCausalLM, type GemmaVariant } from "./models/gemma2.ts";
import { DeepseekV2ForCausalLM } from "./models/deepseek_v2.ts";
import { Glm4ForCausalLM } from "./models/glm4.ts";
import { LlamaForCausalLM, type LlamaVariant } from "./models/llama.ts";
import { MixtralForCausalLM } from "./models/mixtral.ts";
import { Phi3ForCausalLM } from "./models/phi3.ts";
import { QwenMoeForCausalLM } from "./models/qwen2_moe.ts";

export type { CausalLM } from "./causal_lm.ts";

interface Architecture {
  build(config: ModelConfig, options: BuildOptions): CausalLM;
}

function llamaFamily(variant: LlamaVariant): Architecture {
  return { build: (config, options) => new LlamaForCausalLM(config, variant, options) };
}

function gemmaFamily(variant: GemmaVariant): Architecture {
  return { build: (config, options) => new GemmaForCausalLM(config, variant, options) };
}

const ARCHITECTURES: Record<string, Architecture> = {
  llama: llamaFamily({}),
  mistral: llamaFamily({}),
  qwen2: llamaFamily({ qkvBias: true }),
  qwen3: llamaFamily({ qkNorm: true }),
  gemma: gemmaFamily({}),
  gemma2: gemmaFamily({ sandwichNorms: true, globalEvery: 2 }),
  gemma3_text: gemmaFamily({ sandwichNorms: true, gemma3: true }),
  phi3: { build: (config, options) => new Phi3ForCausalLM(config, options) },
  mixtral: { build: (config, options) => new MixtralForCausalLM(config, options) },
  qwen2_moe: { build: (config, options) => new QwenMoeForCausalLM(config, {}, options) },
  qwen3_moe: { build: (config, options) => new QwenMoeForCausalLM(config, { qwen3: true }, options) },
  glm4: { build: (config, options) => new Glm4ForCausalLM(config, options) },
  deepseek_v2: { build: (config, options) => new DeepseekV2ForCausalLM(config, options) },
};

/** model_types whose checkpoints wrap a text model in another (multimodal) one, with the way out. */
const REFUSED: Record<string, string> = {
  gemma3: "this is Gemma 3's multimodal checkpoint (Gemma3ForConditionalGeneration); lmfactory trains its text-only model (model_type gemma3_text, e.g. google/gemma-3-1b-it)",
};

export const SUPPORTED_MODEL_TYPES = Object.keys(ARCHITECTURES);

export function architectureFor(config: ModelConfig, where = "config.json"): Architecture {
  const architecture = ARCHITECTURES[config.model_type];
  const refused = REFUSED[config.model_type];
  if (refused) throw new UserError(`model_type '${config.model_type}' is not supported: ${refused}`, where);
  if (!architecture) {
    throw new UserError(
      `model_type '${config.model_type}' is not supported`,
      where,
      `supported model types: ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  return architecture;
}
