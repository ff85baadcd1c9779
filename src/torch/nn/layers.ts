// The nn building blocks Llama-family models use, after torch.nn.Linear / torch.nn.Embedding /
// torch.nn.Dropout and transformers' LlamaRMSNorm. Default initialisation draws from the same
// generator in the same order as PyTorch, so `manualSeed(s)` gives PyTorch's weights.
import { type DType, type Device } from "../dtype.ts";
import { noGrad } from "../autograd.ts";
import { autocastDeviceOf, autocastState } from "../autocast.ts";
import { empty, ones } from "../creation.ts";
import { dropout, embedding, linear } from "../functional.ts";
import { tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";
import { Module, type Parameter, parameter } from "./module.ts";

export interface LayerOptions {
  dtype?: DType;
  device?: Device | string;
  /** "default": PyTorch's reset_parameters; "empty": uninitialised memory, for weights about to be loaded. */
  init?: "default" | "empty";
}

/** y = x @ weight.T + bias; weight [out, in], bias [out]. */
export class Linear extends Module {
  weight: Parameter;
  bias: Parameter | null;
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(inFeatures: number, outFeatures: number, options: LayerOptions & { bias?: boolean } = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const tensorOptions = { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" };
    const weight = empty([outFeatures, inFeatures], tensorOptions);
    const bias = (options.bias ?? true) ? empty([outFeatures], tensorOptions) : null;
    if ((options.init ?? "default") === "default") {
      // torch.nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(in), 1/sqrt(in)),
      // and the bias draws from the same bound.
      const bound = inFeatures > 0 ? 1 / Math.sqrt(inFeatures) : 0;
      weight.uniform_(-bound, bound);
      bias?.uniform_(-bound, bound);
    }
    this.weight = parameter(weight);
    this.bias = bias ? parameter(bias) : null;
  }

  /** HF `_init_weights` for a Linear: weight ~ N(0, std) (`initializer_range`), bias zero. */
  initNormal(std: number): this {
    noGrad(() => {
      this.weight.normal_(0, std);
      this.bias?.zero_();
    });
    return this;
  }

  /** x [..., in] -> [..., out] */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** A lookup table: weight [V, E]; the padding row starts at zero and gets no gradient. */
export class Embedding extends Module {
  weight: Parameter;
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  readonly paddingIdx: number | null;

  constructor(numEmbeddings: number, embeddingDim: number, options: LayerOptions & { paddingIdx?: number | null } = {}) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    const paddingIdx = options.paddingIdx ?? null;
    if (paddingIdx !== null && (paddingIdx >= numEmbeddings || paddingIdx < -numEmbeddings)) {
      throw new Error(`Embedding: paddingIdx ${paddingIdx} is outside the table of ${numEmbeddings} rows`);
    }
    this.paddingIdx = paddingIdx !== null && paddingIdx < 0 ? paddingIdx + numEmbeddings : paddingIdx;
    const weight = empty([numEmbeddings, embeddingDim], { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" });
    this.weight = parameter(weight);
    // torch.nn.Embedding.reset_parameters: N(0, 1), then the padding row zeroed.
    if ((options.init ?? "default") === "default") this.initNormal(1);
  }

  /** HF `_init_weights` for an Embedding: N(0, std), padding row zeroed. */
  initNormal(std: number): this {
    noGrad(() => {
      this.weight.normal_(0, std);
      if (this.paddingIdx !== null) {
        tidy(() => {
          this.weight.select(0, this.paddingIdx!).zero_();
        });
      }
    });
    return this;
  }

  /** ids int64 [...] -> [..., E] */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids, this.paddingIdx ?? -1);
  }
}

/**
 * transformers' LlamaRMSNorm: normalise in float32 (x * rsqrt(mean(x^2) + eps)), cast back to the
 * input dtype, then scale by the weight (whose dtype decides the output's, as in HF).
 */
export class RMSNorm extends Module {
  weight: Parameter;
  readonly eps: number;

  constructor(hiddenSize: number, options: Omit<LayerOptions, "init"> & { eps?: number } = {}) {
    super();
    this.eps = options.eps ?? 1e-6;
    this.weight = parameter(ones([hiddenSize], { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" }));
  }

  /** x [..., D] -> [..., D] */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const inputDtype = x.dtype;
      // float32 at least: a float64 pass (finite-difference checks) stays in float64.
      const hidden = inputDtype === "float64" ? x : x.to("float32");
      const variance = hidden.pow(2).mean(-1, true);
      const normalised = hidden.mul(variance.add(this.eps).rsqrt());
      // An upcast (float32) weight on lower-precision activations (upcast_layernorm) without
      // autocast: scale in float32 and hand the next layer its own dtype, which no autocast casts
      // to. Under autocast the product stays float32, as in HF, and the next matmul casts it.
      if (this.weight.dtype === "float32" && inputDtype !== "float32" && inputDtype !== "float64" && !autocastState(autocastDeviceOf(x.device)).enabled) {
        return this.weight.mul(normalised).to(inputDtype);
      }
      return this.weight.mul(normalised.to(inputDtype));
    });
  }
}

/** Zeroes elements with probability p while training and scales the rest by 1/(1-p). */
export class Dropout extends Module {
  /** Settable: TRL's disable_dropout_in_model (`disableDropout`) sets it to 0. */
  p: number;

  constructor(p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new Error(`Dropout: p must be in [0, 1], got ${p}`);
    this.p = p;
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training);
  }
}

/** TRL's disable_dropout_in_model: every Dropout inside `module` gets p = 0 (DPO and KTO train without dropout). */
export function disableDropout(module: Module): void {
  for (const [, child] of module.namedModules()) if (child instanceof Dropout) child.p = 0;
}
