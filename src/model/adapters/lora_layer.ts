// The LoRA / DoRA layer as PEFT implements it (peft/tuners/lora/layer.py): `LoraLinear` wraps a
// built `Linear` (or a quantized linear layer, as PEFT wraps bnb's Linear4bit for QLoRA) as `base_layer` with `lora_A` [r, in] and `lora_B` [out, r], so state keys are
// PEFT's (`<name>.lora_A.weight`); PiSSA initialisation from the base weight's SVD; merging back
// into one `Linear`.
import { UserError } from "../../errors.ts";
import { cannotMergeError } from "../quantization/index.ts";
import { type QuantizedLinear, isQuantizedLinear } from "../quantization/quantized_linear.ts";
import {
  type DType,
  type Parameter,
  type Tensor,
  Dropout,
  Linear,
  Module,
  linear,
  noGrad,
  parameter,
  svd,
  svdLowrank,
  tidy,
} from "../../torch/index.ts";

export interface LoraLayerOptions {
  rank: number;
  /** Defaults to 2 x rank, as LLaMA-Factory does. */
  alpha?: number;
  dropout?: number;
  useRslora?: boolean;
  useDora?: boolean;
  /** dtype of the LoRA weights; the base layer's by default (PEFT moves them to it). */
  dtype?: DType;
}

/** What LoRA wraps: a Linear, or a quantized linear layer (QLoRA). */
export type LoraBaseLayer = Linear | QuantizedLinear;

/** One adapter's low-rank update of a layer: y += scaling · B(A(x)). */
export interface LoraUpdate {
  lora_A: Linear;
  lora_B: Linear;
  scaling: number;
}

/** Whether LoRA can wrap `module`. */
export function isLoraBase(module: unknown): module is LoraBaseLayer {
  return module instanceof Linear || isQuantizedLinear(module);
}

/** A Linear plus a low-rank update: y = base(x) + scaling · B(A(dropout(x))). */
export class LoraLinear extends Module {
  base_layer: LoraBaseLayer;
  lora_A: Linear;
  lora_B: Linear;
  lora_dropout: Dropout;
  /** DoRA's per-output-row magnitude [out], saved by PEFT as `<name>.lora_magnitude_vector`. */
  lora_magnitude_vector: Parameter | null = null;
  readonly loraRank: number;
  readonly loraAlpha: number;
  /** alpha / r (alpha / √r with rsLoRA); another adapter's while `swapAdapter` has put it in place. */
  scaling: number;
  readonly useRslora: boolean;
  readonly useDora: boolean;
  /** PEFT's disable_adapter(): the layer computes its base layer alone (see `withAdaptersDisabled`). */
  adapterDisabled = false;

  constructor(baseLayer: LoraBaseLayer, options: LoraLayerOptions) {
    super();
    const loraRank = options.rank;
    if (!Number.isInteger(loraRank) || loraRank <= 0) {
      throw new UserError(`lora_rank must be a positive integer, got ${loraRank}`, "lora_rank", "set lora_rank: 8 (or another positive integer)");
    }
    this.loraRank = loraRank;
    this.loraAlpha = options.alpha ?? 2 * loraRank;
    this.useRslora = options.useRslora ?? false;
    this.useDora = options.useDora ?? false;
    // PEFT: rsLoRA keeps the update's scale stable across ranks with alpha / sqrt(r).
    this.scaling = this.useRslora ? this.loraAlpha / Math.sqrt(loraRank) : this.loraAlpha / loraRank;
    this.base_layer = baseLayer;
    const layer = { bias: false, dtype: options.dtype ?? this.baseDtype, device: this.baseDevice };
    // PEFT's init_lora_weights=True: A ~ kaiming_uniform(a=sqrt(5)), which is nn.Linear's default
    // U(-1/sqrt(in), 1/sqrt(in)); B = 0 so the wrapped layer starts as the base layer.
    this.lora_A = new Linear(baseLayer.inFeatures, loraRank, layer);
    this.lora_B = new Linear(loraRank, baseLayer.outFeatures, { ...layer, init: "empty" });
    noGrad(() => {
      this.lora_B.weight.zero_();
    });
    this.lora_dropout = new Dropout(options.dropout ?? 0);
    if (this.useDora) {
      // PEFT's DoraLinearLayer.update_layer: the magnitude starts as the row norms of W + scaling·B·A.
      this.lora_magnitude_vector = parameter(noGrad(() => tidy(() => this.weightNorm(this.loraWeight()).to(layer.dtype))));
    }
  }

  /**
   * Puts another adapter's A, B and scaling in place of this layer's (PEFT's set_adapter between
   * two adapters on one base, as LLaMA-Factory's PPO switches to the "reward" adapter); returns the
   * ones it replaced, to be swapped back.
   */
  swapAdapter(update: LoraUpdate): LoraUpdate {
    if (this.useDora) throw new UserError("a DoRA layer cannot switch adapters", "use_dora", "train the policy without use_dora");
    const previous = { lora_A: this.lora_A, lora_B: this.lora_B, scaling: this.scaling };
    this.lora_A = update.lora_A;
    this.lora_B = update.lora_B;
    this.scaling = update.scaling;
    return previous;
  }

  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }

  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }

  /** The base weight's dtype (a quantized layer's compute dtype). */
  get baseDtype(): DType {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.computeDtype : base.weight.dtype;
  }

  get baseDevice(): string {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.device : base.weight.device;
  }

  /** The base weight [out, in]; a quantized one dequantized afresh (call inside a tidy). */
  private baseWeight(): Tensor {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.dequantizeWeight() : base.weight;
  }

  /** B · A [out, in], unscaled, in the base weight's dtype. */
  private loraWeight(): Tensor {
    return this.lora_B.weight.matmul(this.lora_A.weight).to(this.baseDtype);
  }

  /** ‖W + scaling · loraWeight‖ over each output row [out] (PEFT's get_weight_norm; dequantized W for QLoRA). */
  private weightNorm(loraWeight: Tensor, scaling = this.scaling): Tensor {
    const weight = this.baseWeight();
    return weight.add(loraWeight.mul(scaling)).norm(2, 1).to(weight.dtype);
  }

  /** scaling · B · A [out, in]: what merging adds to the base weight (before DoRA's rescale). */
  deltaWeight(): Tensor {
    return tidy(() => this.loraWeight().mul(this.scaling));
  }

  /**
   * PEFT's pissa_init: the adapter starts as the top `rank` singular directions of the base weight
   * W = U S Vh (A = √(S/s)·Vh, B = U·√(S/s), s = scaling) and the base keeps the residual
   * W − s·B·A, so the layer computes what it did. `niter` null takes the full SVD (PEFT's
   * "pissa"); a number takes torch.svd_lowrank with that many subspace iterations ("pissa_niter_N").
   */
  initPissa(niter: number | null): void {
    const rank = this.loraRank;
    const base = this.base_layer;
    if (isQuantizedLinear(base)) {
      throw new UserError("PiSSA cannot initialise an adapter on a quantized model", "pissa_init", "run PiSSA on the full-precision model (LLaMA-Factory: scripts/pissa_init.py), then train with quantization_bit");
    }
    const weight = base.weight;
    if (rank > Math.min(weight.shape[0]!, weight.shape[1]!)) {
      throw new UserError(
        `pissa_init: lora_rank ${rank} exceeds the smaller side of a [${weight.shape}] weight`,
        "lora_rank",
        `set lora_rank to at most ${Math.min(weight.shape[0]!, weight.shape[1]!)}`,
      );
    }
    noGrad(() =>
      tidy(() => {
        const W = weight.to("float32");
        let [Ur, Sr, Vhr]: Tensor[] = [];
        if (niter === null) {
          const { U, S, Vh } = svd(W);
          [Ur, Sr, Vhr] = [U.narrow(1, 0, rank), S.narrow(0, 0, rank), Vh.narrow(0, 0, rank)];
        } else {
          const { U, S, V } = svdLowrank(W, rank, niter);
          [Ur, Sr, Vhr] = [U, S, V.t()];
        }
        const root = Sr!.div(this.scaling).sqrt(); // [r]
        const loraA = root.view(rank, 1).mul(Vhr!); // diag(√S) · Vh  [r, in]
        const loraB = Ur!.mul(root.view(1, rank)); // U · diag(√S)  [out, r]
        this.lora_A.weight.copy_(loraA.to(this.lora_A.weight.dtype));
        this.lora_B.weight.copy_(loraB.to(this.lora_B.weight.dtype));
        weight.copy_(W.sub(loraB.mul(this.scaling).matmul(loraA)).to(weight.dtype));
      }),
    );
  }

  /** x [..., in] -> [..., out] */
  forward(x: Tensor): Tensor {
    if (this.adapterDisabled) return this.base_layer.forward(x);
    return tidy(() => {
      const result = this.base_layer.forward(x);
      const resultDtype = result.dtype;
      const loraDtype = this.lora_A.weight.dtype;
      const loraInput = x.dtype === loraDtype ? x : x.to(loraDtype);
      if (!this.lora_magnitude_vector) {
        const update = this.lora_B.forward(this.lora_A.forward(this.lora_dropout.forward(loraInput)));
        return result.add(update.mul(this.scaling)).to(resultDtype);
      }
      return result.add(this.doraUpdate(loraInput, result)).to(resultDtype);
    });
  }

  /**
   * PEFT's DoraLinearLayer.forward: (m/‖W + sBA‖ - 1) · xWᵀ + m/‖W + sBA‖ · s · B(A(x)), the norm
   * detached (DoRA paper §4.3). With dropout active the base term is recomputed on the dropped
   * input, as PEFT does.
   */
  private doraUpdate(loraInput: Tensor, baseResult: Tensor): Tensor {
    const dropoutActive = this.lora_dropout.p > 0 && this.lora_dropout.training;
    const dropped = dropoutActive ? this.lora_dropout.forward(loraInput) : loraInput;
    const base = this.base_layer;
    let baseNoBias: Tensor; // [..., out]
    if (dropoutActive && isQuantizedLinear(base)) baseNoBias = base.bias ? base.forward(dropped).sub(base.bias) : base.forward(dropped);
    else if (dropoutActive) baseNoBias = linear(dropped, (base as Linear).weight);
    else baseNoBias = base.bias ? baseResult.sub(base.bias) : baseResult;
    const weightNorm = this.weightNorm(this.loraWeight().detach()).detach(); // [out]
    const magnitudeScale = this.lora_magnitude_vector!.div(weightNorm); // [out], broadcast on the last dim
    const loraResult = this.lora_B.forward(this.lora_A.forward(dropped)); // [..., out]
    return magnitudeScale.sub(1).mul(baseNoBias).add(magnitudeScale.mul(loraResult).mul(this.scaling));
  }

  /**
   * A plain Linear with the update folded in: W + s·B·A (DoRA: (m/‖W + s·B·A‖)·(W + s·B·A)); bias
   * kept. A quantized base is refused, as LLaMA-Factory refuses merging into a quantized model.
   */
  merge(): Linear {
    const base = this.base_layer;
    if (isQuantizedLinear(base)) throw cannotMergeError(base.quantizationMethod, "a LoRA adapter");
    const merged = new Linear(base.inFeatures, base.outFeatures, {
      bias: base.bias !== null,
      dtype: base.weight.dtype,
      device: base.weight.device,
      init: "empty",
    });
    noGrad(() =>
      tidy(() => {
        const updated = base.weight.add(this.loraWeight().mul(this.scaling)); // [out, in]
        if (this.lora_magnitude_vector) {
          const norm = this.weightNorm(this.loraWeight(), this.scaling); // [out]
          merged.weight.copy_(updated.mul(this.lora_magnitude_vector.div(norm).view(-1, 1)));
        } else {
          merged.weight.copy_(updated);
        }
        if (base.bias) merged.bias!.copy_(base.bias);
      }),
    );
    merged.weight.requiresGrad_(base.weight.requiresGrad);
    merged.bias?.requiresGrad_(base.bias!.requiresGrad);
    return merged;
  }
}
