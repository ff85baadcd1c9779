// Rotary position embeddings with Hugging Face's scaling types (transformers
// modeling_rope_utils.py: default, linear, dynamic, yarn, llama3, longrope), computed in float32 as
// HF does, over the first partial_rotary_factor of each head.
import { type Tensor, arange, autocast, autocastDeviceOf, cat, keep, powScalarBase, stack, tensor, tidy, where } from "../torch/index.ts";
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

/** The inverse frequencies for `config`; `seqLen` matters only for `dynamic` and `longrope`. */
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
      case "longrope":
        return longrope(config, base, dim, seqLen);
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

/** The pretrained context of a longrope model: Phi-3's top-level field, else the scaling's. */
function longropeOriginal(config: ModelConfig): number | null {
  const topLevel = config.original_max_position_embeddings;
  return typeof topLevel === "number" ? topLevel : (config.rope_scaling?.original_max_position_embeddings ?? null);
}

/**
 * LongRoPE (Phi-3's `su`): per-frequency rescale factors, the short ones within the pretrained
 * context and the long ones past it, and cos/sin scaled by sqrt(1 + ln(f) / ln(original)) with
 * f = max_position_embeddings / original_max_position_embeddings.
 */
function longrope(config: ModelConfig, base: number, dim: number, seqLen?: number): RopeParameters {
  const scaling = config.rope_scaling!;
  let original = longropeOriginal(config);
  let factor: number;
  if (original !== null) {
    factor = config.max_position_embeddings / original;
  } else {
    original = config.max_position_embeddings;
    factor = scaling.factor ?? 1;
  }
  const attentionScaling = scaling.attention_factor ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original)));
  const factors = seqLen !== undefined && seqLen > original ? scaling.long_factor : scaling.short_factor;
  if (!Array.isArray(factors) || factors.length !== dim / 2) {
    throw new Error(`longrope: short_factor and long_factor need ${dim / 2} values (rotary dim ${dim} / 2), got ${factors?.length}`);
  }
  const positionsFreq = powScalarBase(base, arange(0, dim, 2, { dtype: "float32" }).div(dim));
  const invFreq = tensor(factors, { dtype: "float32" }).mul(positionsFreq).reciprocal();
  return { invFreq, attentionScaling };
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
    const type = this.config.rope_scaling?.rope_type;
    if (type === "dynamic") this.updateDynamic(positions);
    if (type === "longrope") this.updateLongrope(positions);
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

  /** HF's _longrope_frequency_update: long factors once the pass reaches past the pretrained context. */
  private updateLongrope(positions: Tensor): void {
    const seqLen = tidy(() => positions.max().item()) + 1;
    const original = longropeOriginal(this.config) ?? this.config.max_position_embeddings;
    const target = seqLen > original ? original + 1 : original;
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

/**
 * x * cos + rotate_half(x) * sin, with x [B, H, T, D] and cos/sin [B, T, R]: the first R <= D
 * channels of each head rotate and the rest pass (partial rotary, as Phi-3's apply_rotary_pos_emb).
 */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return tidy(() => {
    const [D, R] = [x.shape[3]!, cos.shape[2]!];
    const part = R < D ? x.narrow(3, 0, R) : x;
    const half = R / 2;
    const rotated = cat([part.slice(3, half).neg(), part.slice(3, 0, half)], 3);
    const embedded = part.mul(cos.unsqueeze(1)).add(rotated.mul(sin.unsqueeze(1)));
    return R < D ? cat([embedded, x.narrow(3, R, D - R)], 3) : embedded;
  });
}

/**
 * GLM's and DeepSeek's rotary on x [B, H, T, D] with cos/sin [B, T, R] (R <= D, emb = cat(f, f)):
 * the first R channels rotate as pairs (2i, 2i+1) by frequency i (DeepSeek's complex product), the
 * rest pass.
 */
export function applyInterleavedRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return tidy(() => {
    const [B, H, T, D] = x.shape as [number, number, number, number];
    const R = cos.shape[2]!;
    const pairCos = cos.narrow(2, 0, R / 2).repeatInterleave(2, 2).unsqueeze(1); // [B, 1, T, R]
    const pairSin = sin.narrow(2, 0, R / 2).repeatInterleave(2, 2).unsqueeze(1);
    const part = x.narrow(3, 0, R);
    const pairs = part.reshape(B, H, T, R / 2, 2);
    const rotated = stack([pairs.select(4, 1).neg(), pairs.select(4, 0)], -1).reshape(B, H, T, R); // (-x1, x0) per pair
    const embedded = part.mul(pairCos).add(rotated.mul(pairSin));
    return R < D ? cat([embedded, x.narrow(3, R, D - R)], 3) : embedded;
  });
}
