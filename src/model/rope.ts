// Rotary position embeddings with Hugging Face's scaling types (transformers
// modeling_rope_utils.py: default, linear, dynamic, yarn, llama3), computed in float32 as HF does.
import { type Tensor, arange, autocast, autocastDeviceOf, cat, keep, powScalarBase, tidy, where } from "../torch/index.ts";
import type { ModelConfig } from "./config.ts";

export interface RopeParameters {
  /** [D/2] float32 inverse frequencies. */
  invFreq: Tensor;
  /** Multiplies cos and sin (yarn's attention factor; 1 otherwise). */
  attentionScaling: number;
}

function rotaryDim(config: ModelConfig): number {
  return Math.floor(config.head_dim * (config.partial_rotary_factor ?? 1));
}

/** 1 / base^(2i/dim), i = 0 .. dim/2-1, float32 throughout like torch. */
function defaultInvFreq(base: number, dim: number): Tensor {
  return tidy(() => powScalarBase(base, arange(0, dim, 2, { dtype: "float32" }).div(dim)).reciprocal());
}

function originalMaxPositions(config: ModelConfig): number {
  return config.rope_scaling?.original_max_position_embeddings ?? config.max_position_embeddings;
}

/** The inverse frequencies for `config`; `seqLen` matters only for `dynamic`. */
export function ropeParameters(config: ModelConfig, seqLen?: number): RopeParameters {
  const scaling = config.rope_scaling;
  const type = scaling?.rope_type ?? "default";
  const base = config.rope_theta;
  const dim = rotaryDim(config);
  const factor = scaling?.factor ?? 1;
  return tidy(() => {
    switch (type) {
      case "default":
        return { invFreq: defaultInvFreq(base, dim), attentionScaling: 1 };
      case "linear":
        return { invFreq: defaultInvFreq(base, dim).div(factor), attentionScaling: 1 };
      case "dynamic": {
        // NTK-aware: past the trained length, stretch the base with the sequence length.
        const maxPositions = config.max_position_embeddings;
        const length = Math.max(seqLen ?? maxPositions, maxPositions);
        const scaledBase = base * ((factor * length) / maxPositions - (factor - 1)) ** (dim / (dim - 2));
        return { invFreq: defaultInvFreq(scaledBase, dim), attentionScaling: 1 };
      }
      case "yarn":
        return yarn(config, base, dim, factor);
      case "llama3":
        return llama3(config, base, dim, factor);
      default:
        throw new Error(`unknown rope_type ${type as string}`);
    }
  });
}

function yarn(config: ModelConfig, base: number, dim: number, factor: number): RopeParameters {
  const scaling = config.rope_scaling!;
  const originalMax = originalMaxPositions(config);
  const mscaleOf = (scale: number, mscale = 1) => (scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1);
  let attentionScaling = scaling.attention_factor;
  if (attentionScaling === undefined) {
    attentionScaling =
      scaling.mscale && scaling.mscale_all_dim
        ? mscaleOf(factor, scaling.mscale) / mscaleOf(factor, scaling.mscale_all_dim)
        : mscaleOf(factor);
  }
  const betaFast = scaling.beta_fast ?? 32;
  const betaSlow = scaling.beta_slow ?? 1;
  const correctionDim = (rotations: number) => (dim * Math.log(originalMax / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (scaling.truncate ?? true) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  const posFreqs = powScalarBase(base, arange(0, dim, 2, { dtype: "float32" }).div(dim));
  const extrapolation = posFreqs.reciprocal();
  const interpolation = posFreqs.mul(factor).reciprocal();
  const ramp = arange(0, dim / 2, 1, { dtype: "float32" }).sub(low).div(high - low).clamp(0, 1);
  const extrapolationFactor = ramp.rsub(1);
  const invFreq = interpolation.mul(extrapolationFactor.rsub(1)).add(extrapolation.mul(extrapolationFactor));
  return { invFreq, attentionScaling };
}

function llama3(config: ModelConfig, base: number, dim: number, factor: number): RopeParameters {
  const scaling = config.rope_scaling!;
  const lowFreqFactor = scaling.low_freq_factor ?? 1;
  const highFreqFactor = scaling.high_freq_factor ?? 4;
  const oldContext = scaling.original_max_position_embeddings ?? 8192;
  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  const invFreq = defaultInvFreq(base, dim);
  const wavelen = invFreq.reciprocal().mul(2 * Math.PI);
  // Long wavelengths are interpolated by `factor`, short ones kept, the band between blended.
  const scaled = where(wavelen.gt(lowFreqWavelen), invFreq.div(factor), invFreq);
  const smooth = wavelen.reciprocal().mul(oldContext).sub(lowFreqFactor).div(highFreqFactor - lowFreqFactor);
  const smoothed = smooth.rsub(1).mul(scaled).div(factor).add(smooth.mul(scaled));
  const medium = wavelen.lt(highFreqWavelen).logicalNot().logicalAnd(wavelen.gt(lowFreqWavelen).logicalNot());
  return { invFreq: where(medium, smoothed, scaled), attentionScaling: 1 };
}

/** cos and sin [B, T, D] for integer `positions` [B, T], as HF's LlamaRotaryEmbedding.forward. */
export class RotaryEmbedding {
  private params: RopeParameters;
  private dynamicLength: number;

  constructor(private readonly config: ModelConfig) {
    this.params = ropeParameters(config);
    keep(this.params.invFreq);
    this.dynamicLength = config.max_position_embeddings;
  }

  forward(positions: Tensor): { cos: Tensor; sin: Tensor } {
    if (this.config.rope_scaling?.rope_type === "dynamic") this.updateDynamic(positions);
    // Float32 even under autocast, as HF forces it (autocast(enabled=False) around this product).
    return autocast(() => tidy(() => {
      const invFreq = this.params.invFreq.unsqueeze(0).unsqueeze(2); // [1, D/2, 1]
      const pos = positions.to("float32").unsqueeze(1); // [B, 1, T]
      const freqs = invFreq.matmul(pos).transpose(1, 2); // [B, T, D/2]
      const emb = cat([freqs, freqs], -1); // [B, T, D]
      const scale = this.params.attentionScaling;
      return { cos: emb.cos().mul(scale), sin: emb.sin().mul(scale) };
    }), { device: autocastDeviceOf(positions.device), enabled: false });
  }

  /** HF's dynamic_rope_update: grow the base past the trained length, reset when back under. */
  private updateDynamic(positions: Tensor): void {
    const seqLen = tidy(() => positions.max().item()) + 1;
    const maxPositions = this.config.max_position_embeddings;
    const target = seqLen > maxPositions ? seqLen : maxPositions;
    if (target === this.dynamicLength) return;
    this.params.invFreq.dispose();
    this.params = ropeParameters(this.config, target);
    keep(this.params.invFreq);
    this.dynamicLength = target;
  }

  dispose(): void {
    this.params.invFreq.dispose();
  }
}

/** x * cos + rotate_half(x) * sin, with x [B, H, T, D] and cos/sin [B, T, D]. */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return tidy(() => {
    const half = x.shape[3]! / 2;
    const rotated = cat([x.slice(3, half).neg(), x.slice(3, 0, half)], 3);
    return x.mul(cos.unsqueeze(1)).add(rotated.mul(sin.unsqueeze(1)));
  });
}
