// FreezeArguments: partial fine-tuning that trains only some layers and modules
// (LLaMA-Factory `FreezeArguments` in `hparams/finetuning_args.py`).
import { int, list, optList } from "./schema.ts";

export const freezeFields = {
  freeze_trainable_layers: int(
    2,
    "Layers to train: a positive n trains the last n layers, a negative n the first n.",
    { aliases: ["num_layer_trainable"] },
  ),
  freeze_trainable_modules: list(
    ["all"],
    "Modules inside the trained layers to train (e.g. mlp, self_attn), comma-separated; all for every module.",
    { aliases: ["name_module_trainable"] },
  ),
  freeze_extra_modules: optList("Modules outside the hidden layers to train too (e.g. embed_tokens, norm, lm_head)."),
};
