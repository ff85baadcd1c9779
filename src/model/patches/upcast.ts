// upcast_layernorm, as LLaMA-Factory's prepare_model_for_training: every 1-D parameter whose name
// contains "norm" or "ln" is kept in float32 (RMSNorm then scales in float32 and returns the
// activations' dtype).
import { type Module, Tensor, keep, noGrad } from "../../torch/index.ts";

/** Casts norm weights to float32 in place; returns the names changed. */
export function upcastLayernorm(model: Module): string[] {
  const changed: string[] = [];
  noGrad(() => {
    for (const [prefix, module] of model.namedModules()) {
      const properties = module as unknown as Record<string, unknown>;
      for (const [property, value] of Object.entries(properties)) {
        const name = prefix ? `${prefix}.${property}` : property;
        if (!(value instanceof Tensor) || value.ndim !== 1 || value.dtype === "float32" || !/norm|ln/.test(name)) continue;
        properties[property] = keep(value.to("float32")).requiresGrad_(value.requiresGrad);
        value.dispose();
        changed.push(name);
      }
    }
  });
  return changed;
}
