// Block quantization for QLoRA, after bitsandbytes (csrc/kernels.cu: kQuantizeBlockwise with
// dQuantizeNF4 / dQuantizeFP4 / dQuantize, kDequantizeBlockwise) and a linear layer over packed
// weights whose backward re-dequantizes the weight instead of saving it (bnb's MatMul4Bit).
// One storage form serves every format: a level per element (two 4-bit levels per byte, the first
// in the high nibble, as bitsandbytes packs; or one byte), W[e] = (table[level] - zero[b]) * scale[b]
// with b = e / blocksize. CPU runs fused loops; other devices compose ATen ops.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "runtime.h"

namespace {

// bitsandbytes' dQuantizeNF4: the decision tree over the midpoints of the NF4 code, as published.
inline uint8_t quantize_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 0b1111 : 0b1110;
      return x > 0.5016634166240692f ? 0b1101 : 0b1100;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 0b1011 : 0b1010;
    return x > 0.1202552504837513f ? 0b1001 : 0b1000;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 0b0111 : 0b0110;
    return x > -0.23460740596055984f ? 0b0101 : 0b0100;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 0b0011 : 0b0010;
  return x > -0.8480964004993439f ? 0b0001 : 0b0000;
}

// bitsandbytes' dQuantizeFP4: sign bit, then a search over the magnitudes' midpoints (divided by 12).
inline uint8_t quantize_fp4(float x) {
  uint8_t sign = x < 0 ? 0b1000 : 0b0000;
  x = std::fabs(x);
  if (x > 0.29166667f) {
    if (x > 0.583333f) return (x > 0.8333333f ? 0b0011 : 0b0010) + sign;
    return (x > 0.4166667f ? 0b0101 : 0b0100) + sign;
  }
  if (x > 0.0859375f) return (x > 0.20833333f ? 0b0111 : 0b0110) + sign;
  return (x > 0.00260417f ? 0b0001 : 0b0000) + sign;
}

// bitsandbytes' dQuantize<0>: binary search over a sorted 256-entry code, then round to nearest.
inline uint8_t quantize_dynamic(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) return x > (upper + val) * 0.5f ? upper_pivot : pivot;
  return x < (lower + val) * 0.5f ? lower_pivot : pivot;
}

// The absmax of a block as the kernel reduces it: fmaxf over |x| from -FLT_MAX.
template <typename T>
inline float block_absmax(const T* a, int64_t start, int64_t end) {
  float m = -FLT_MAX;
  for (int64_t i = start; i < end; i++) m = std::fmax(m, std::fabs(static_cast<float>(a[i])));
  return m;
}

at::Tensor float_input(const at::Tensor& a, const char* op) {
  auto st = a.scalar_type();
  if (!at::isFloatingType(st)) throw std::invalid_argument(std::string(op) + ": input must be a floating tensor");
  return a.detach().to(at::kCPU).contiguous().view(-1);
}

// quantize_4bit(A, blocksize, nf4) -> [packed uint8 [ceil(n/2)], absmax float32 [blocks]]
std::vector<at::Tensor> quantize_4bit(const at::Tensor& input, int64_t blocksize, bool nf4) {
  if (blocksize <= 0 || blocksize % 2) throw std::invalid_argument("quantize_4bit: blocksize must be even and positive");
  at::Tensor a = float_input(input, "quantize_4bit");
  const int64_t n = a.numel();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  at::Tensor packed = at::empty({(n + 1) / 2}, at::TensorOptions().dtype(at::kByte));
  at::Tensor absmax = at::empty({blocks}, at::TensorOptions().dtype(at::kFloat));
  uint8_t* out = packed.data_ptr<uint8_t>();
  float* am = absmax.data_ptr<float>();
  // Values are read as float32, as bitsandbytes' kernels read them (float64 for gradient checks).
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "quantize_4bit", [&] {
    const scalar_t* data = a.data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) {
        const int64_t start = b * blocksize, end = std::min(n, start + blocksize);
        const float m = block_absmax(data, start, end);
        am[b] = m;
        const float r = 1.0f / m;
        for (int64_t i = start; i < end; i += 2) {
          // The kernel loads a missing last element as 0 (odd n).
          const float x0 = static_cast<float>(data[i]) * r;
          const float x1 = (i + 1 < end ? static_cast<float>(data[i + 1]) : 0.0f) * r;
          const uint8_t hi = nf4 ? quantize_nf4(x0) : quantize_fp4(x0);
          const uint8_t lo = nf4 ? quantize_nf4(x1) : quantize_fp4(x1);
          out[i / 2] = static_cast<uint8_t>((hi << 4) | lo);
        }
      }
    });
  });
  return {packed.to(input.device()), absmax.to(input.device())};
}

// quantize_blockwise(A, code [256], blocksize) -> [levels uint8 [n], absmax float32 [blocks]]
std::vector<at::Tensor> quantize_blockwise(const at::Tensor& input, const at::Tensor& code_tensor, int64_t blocksize) {
  if (blocksize <= 0) throw std::invalid_argument("quantize_blockwise: blocksize must be positive");
  if (code_tensor.numel() != 256) throw std::invalid_argument("quantize_blockwise: the code must hold 256 values");
  at::Tensor a = float_input(input, "quantize_blockwise");
  at::Tensor code = code_tensor.detach().to(at::kCPU, at::kFloat).contiguous();
  const int64_t n = a.numel();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  at::Tensor levels = at::empty({n}, at::TensorOptions().dtype(at::kByte));
  at::Tensor absmax = at::empty({blocks}, at::TensorOptions().dtype(at::kFloat));
  uint8_t* out = levels.data_ptr<uint8_t>();
  float* am = absmax.data_ptr<float>();
  const float* c = code.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "quantize_blockwise", [&] {
    const scalar_t* data = a.data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) {
        const int64_t start = b * blocksize, end = std::min(n, start + blocksize);
        const float m = block_absmax(data, start, end);
        am[b] = m;
        const float r = 1.0f / m;
        for (int64_t i = start; i < end; i++) out[i] = quantize_dynamic(c, static_cast<float>(data[i]) * r);
      }
    });
  });
  return {levels.to(input.device()), absmax.to(input.device())};
}

struct Packed {
  at::Tensor levels;  // uint8: [ceil(numel/2)] for 4 bits, [numel] for 8
  at::Tensor table;   // float32 [16] or [256]
  at::Tensor scale;   // float32 [blocks]
  at::Tensor zero;    // float32 [blocks], or empty for none
  int64_t bits;
  int64_t blocksize;
  int64_t numel;
};

void check_packed(const Packed& p) {
  if (p.bits != 4 && p.bits != 8) throw std::invalid_argument("dequantize: bits must be 4 or 8");
  if (p.levels.scalar_type() != at::kByte) throw std::invalid_argument("dequantize: levels must be uint8");
  const int64_t expected = p.bits == 4 ? (p.numel + 1) / 2 : p.numel;
  if (p.levels.numel() != expected) throw std::invalid_argument("dequantize: levels hold " + std::to_string(p.levels.numel()) + " bytes, expected " + std::to_string(expected));
  if (p.table.numel() != (int64_t{1} << p.bits) || p.table.scalar_type() != at::kFloat) throw std::invalid_argument("dequantize: the table must be float32 with 2^bits values");
  const int64_t blocks = (p.numel + p.blocksize - 1) / p.blocksize;
  if (p.blocksize <= 0 || p.scale.numel() != blocks || p.scale.scalar_type() != at::kFloat) throw std::invalid_argument("dequantize: scale must be float32 with one value per block");
  if (p.zero.numel() && (p.zero.numel() != blocks || p.zero.scalar_type() != at::kFloat)) throw std::invalid_argument("dequantize: zero must be float32 with one value per block");
  if (p.bits == 4 && p.blocksize % 2) throw std::invalid_argument("dequantize: 4-bit blocks must have an even size");
}

// Fused CPU loop: per block, the table scaled into the output dtype ((table[k] - zero) · scale,
// rounded as a float -> dtype cast rounds), then one lookup per level.
at::Tensor dequantize_cpu(const Packed& p, at::ScalarType dtype) {
  at::Tensor levels = p.levels.contiguous(), table = p.table.contiguous(), scale = p.scale.contiguous();
  at::Tensor zero = p.zero.contiguous();
  at::Tensor out = at::empty({p.numel}, at::TensorOptions().dtype(dtype));
  const uint8_t* q = levels.data_ptr<uint8_t>();
  const float* t = table.data_ptr<float>();
  const float* s = scale.data_ptr<float>();
  const float* z = zero.numel() ? zero.data_ptr<float>() : nullptr;
  const int64_t n = p.numel, bs = p.blocksize, blocks = (n + bs - 1) / bs, entries = table.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "dequantize", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> lut(entries);
      for (int64_t b = b0; b < b1; b++) {
        const float sb = s[b], zb = z ? z[b] : 0.0f;
        const int64_t start = b * bs, end = std::min(n, start + bs);
        if (bs < entries) {  // a small block of 8-bit levels: cheaper without the table
          for (int64_t i = start; i < end; i++) o[i] = static_cast<scalar_t>(z ? (t[q[i]] - zb) * sb : t[q[i]] * sb);
          continue;
        }
        // (t - 0) · s equals t · s, so one formula serves formats with and without zeros.
        for (int64_t k = 0; k < entries; k++) lut[k] = static_cast<scalar_t>(z ? (t[k] - zb) * sb : t[k] * sb);
        if (p.bits == 4) {
          for (int64_t i = start; i < end; i += 2) {
            const uint8_t byte = q[i / 2];
            o[i] = lut[byte >> 4];
            if (i + 1 < end) o[i + 1] = lut[byte & 15];
          }
        } else {
          for (int64_t i = start; i < end; i++) o[i] = lut[q[i]];
        }
      }
    });
  });
  return out;
}

// The same computation in ATen ops, for devices without the fused loop (CUDA).
at::Tensor dequantize_composed(const Packed& p, at::ScalarType dtype) {
  at::Tensor index;
  if (p.bits == 4) {
    at::Tensor hi = p.levels.__rshift__(4);
    at::Tensor lo = p.levels.bitwise_and(15);
    index = at::stack({hi, lo}, 1).view(-1).narrow(0, 0, p.numel);
  } else {
    index = p.levels.view(-1);
  }
  at::Tensor values = p.table.index_select(0, index.to(at::kLong));
  const int64_t blocks = (p.numel + p.blocksize - 1) / p.blocksize;
  const int64_t padded = blocks * p.blocksize;
  if (padded != p.numel) values = at::constant_pad_nd(values, {0, padded - p.numel});
  values = values.view({blocks, p.blocksize});
  if (p.zero.numel()) values = values - p.zero.view({-1, 1});
  values = (values * p.scale.view({-1, 1})).view(-1).narrow(0, 0, p.numel);
  return values.to(dtype);
}

at::Tensor dequantize(const Packed& p, at::ScalarType dtype, bool composed) {
  check_packed(p);
  if (!composed && p.levels.device().is_cpu()) return dequantize_cpu(p, dtype);
  return dequantize_composed(p, dtype);
}

// Few rows (decoding): y = x · Wᵀ straight from the packed levels, one block of W decoded at a time
// into a small buffer (through the block's scaled table) and dotted with every row of x, so W is
// never written out in full. Sums run in float32 over the dequantized values as float32 (not
// rounded to x's dtype first).
bool small_linear_applies(const Packed& p, const at::Tensor& x, int64_t in_features, bool composed) {
  if (composed || !x.device().is_cpu() || !p.levels.device().is_cpu() || x.scalar_type() == at::kDouble) return false;
  const int64_t rows = in_features ? x.numel() / in_features : 0;
  return rows > 0 && rows <= 8 && in_features % p.blocksize == 0;
}

// The 4-bit few-rows loop with AVX2 + FMA: eight levels at a time through the block's 16-entry
// scaled table (two 8-lane permutes and a blend), multiplied into one 8-lane accumulator per row
// of x, summed across lanes once per output. Output rows [o0, o1). ROWS is a template argument so
// that the accumulators live in registers (a runtime-indexed array goes through memory each step).
template <int ROWS>
__attribute__((target("avx2,fma"))) void small_linear_4bit_avx2(const float* X, const uint8_t* q, const float* t, const float* s, const float* z,
                                                                int64_t o0, int64_t o1, int64_t in_features, int64_t bs, float* Y,
                                                                int64_t out_features) {
  const int64_t per_row = in_features / bs;
  const __m256i seven = _mm256_set1_epi32(7);
  const __m128i nibble = _mm_set1_epi8(0x0F);
  alignas(32) float lut[16];
  for (int64_t o = o0; o < o1; o++) {
    __m256 acc[ROWS], acc2[ROWS];
    for (int m = 0; m < ROWS; m++) acc[m] = acc2[m] = _mm256_setzero_ps();
    for (int64_t k = 0; k < per_row; k++) {
      const int64_t b = o * per_row + k, e0 = o * in_features + k * bs;
      const float sb = s[b], zb = z ? z[b] : 0.0f;
      for (int e = 0; e < 16; e++) lut[e] = (t[e] - zb) * sb;
      const __m256 lut_lo = _mm256_load_ps(lut), lut_hi = _mm256_load_ps(lut + 8);
      const uint8_t* qb = q + e0 / 2;
      const float* xk = X + k * bs;
      // Sixteen levels (eight bytes) a step, in two independent accumulator sets so that
      // consecutive FMAs do not wait on each other.
      for (int64_t j = 0; j < bs; j += 16) {
        int64_t packed;
        std::memcpy(&packed, qb + j / 2, 8);
        const __m128i bytes = _mm_cvtsi64_si128(packed);
        // Each byte holds two levels, the first in the high nibble: interleave high and low.
        const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
        const __m128i low = _mm_and_si128(bytes, nibble);
        const __m128i levels = _mm_unpacklo_epi8(high, low);  // 16 levels in order
        const __m256i index0 = _mm256_cvtepu8_epi32(levels);
        const __m256i index1 = _mm256_cvtepu8_epi32(_mm_srli_si128(levels, 8));
        const __m256 w0 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, index0), _mm256_permutevar8x32_ps(lut_hi, index0),
                                           _mm256_castsi256_ps(_mm256_cmpgt_epi32(index0, seven)));
        const __m256 w1 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, index1), _mm256_permutevar8x32_ps(lut_hi, index1),
                                           _mm256_castsi256_ps(_mm256_cmpgt_epi32(index1, seven)));
        for (int m = 0; m < ROWS; m++) {
          acc[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xk + m * in_features + j), acc[m]);
          acc2[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xk + m * in_features + j + 8), acc2[m]);
        }
      }
    }
    for (int m = 0; m < ROWS; m++) {
      const __m256 total = _mm256_add_ps(acc[m], acc2[m]);
      __m128 sum = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
      sum = _mm_hadd_ps(sum, sum);
      sum = _mm_hadd_ps(sum, sum);
      Y[m * out_features + o] = _mm_cvtss_f32(sum);
    }
  }
}

using SmallLinear4bit = void (*)(const float*, const uint8_t*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                 float*, int64_t);
constexpr SmallLinear4bit kSmallLinear4bit[8] = {
    small_linear_4bit_avx2<1>, small_linear_4bit_avx2<2>, small_linear_4bit_avx2<3>, small_linear_4bit_avx2<4>,
    small_linear_4bit_avx2<5>, small_linear_4bit_avx2<6>, small_linear_4bit_avx2<7>, small_linear_4bit_avx2<8>,
};

bool has_avx2_fma() {
  static const bool found = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return found;
}

at::Tensor small_linear_cpu(const at::Tensor& x, const Packed& p, int64_t out_features, int64_t in_features) {
  check_packed(p);
  at::Tensor xf = x.reshape({-1, in_features}).to(at::kFloat).contiguous();
  const int64_t rows = xf.size(0), bs = p.blocksize, per_row = in_features / bs;
  at::Tensor levels = p.levels.contiguous(), table = p.table.contiguous(), scale = p.scale.contiguous(), zero = p.zero.contiguous();
  at::Tensor y = at::empty({rows, out_features}, at::TensorOptions().dtype(at::kFloat));
  const float* X = xf.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const uint8_t* q = levels.data_ptr<uint8_t>();
  const float* t = table.data_ptr<float>();
  const float* s = scale.data_ptr<float>();
  const float* z = zero.numel() ? zero.data_ptr<float>() : nullptr;
  const bool four = p.bits == 4;
  const int64_t entries = table.numel();
  const bool vectorized = four && bs % 16 == 0 && has_avx2_fma();
  at::parallel_for(0, out_features, 8, [&](int64_t o0, int64_t o1) {
    if (vectorized) return kSmallLinear4bit[rows - 1](X, q, t, s, z, o0, o1, in_features, bs, Y, out_features);
    std::vector<float> w(bs);
    std::vector<float> acc(rows);
    std::vector<float> lut(entries);
    for (int64_t o = o0; o < o1; o++) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k = 0; k < per_row; k++) {
        const int64_t b = o * per_row + k, e0 = o * in_features + k * bs;
        const float sb = s[b], zb = z ? z[b] : 0.0f;
        if (!four && bs < entries) {
          for (int64_t j = 0; j < bs; j++) w[j] = z ? (t[q[e0 + j]] - zb) * sb : t[q[e0 + j]] * sb;
        } else {
          for (int64_t e = 0; e < entries; e++) lut[e] = z ? (t[e] - zb) * sb : t[e] * sb;
        }
        if (four) {
          for (int64_t j = 0; j < bs; j += 2) {
            const uint8_t byte = q[(e0 + j) >> 1];
            w[j] = lut[byte >> 4];
            w[j + 1] = lut[byte & 15];
          }
        } else if (bs >= entries) {
          for (int64_t j = 0; j < bs; j++) w[j] = lut[q[e0 + j]];
        }
        for (int64_t m = 0; m < rows; m++) {
          const float* xr = X + m * in_features + k * bs;
          float dot = 0.0f;
          for (int64_t j = 0; j < bs; j++) dot += w[j] * xr[j];
          acc[m] += dot;
        }
      }
      for (int64_t m = 0; m < rows; m++) Y[m * out_features + o] = acc[m];
    }
  });
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out_features;
  return y.view(shape).to(x.scalar_type());
}

// y = x · Wᵀ with W dequantized from `levels`; backward gives x's gradient through a freshly
// dequantized W (nothing of W's size is saved), and no gradient for the packed weight.
class PackedLinear : public torch::autograd::Function<PackedLinear> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& levels,
                            const at::Tensor& table, const at::Tensor& scale, const at::Tensor& zero, int64_t bits,
                            int64_t blocksize, int64_t out_features, int64_t in_features, bool composed) {
    Packed p{levels, table, scale, zero, bits, blocksize, out_features * in_features};
    ctx->save_for_backward({levels, table, scale, zero});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["blocksize"] = blocksize;
    ctx->saved_data["out"] = out_features;
    ctx->saved_data["in"] = in_features;
    ctx->saved_data["composed"] = composed;
    if (small_linear_applies(p, x, in_features, composed)) return small_linear_cpu(x, p, out_features, in_features);
    at::Tensor weight = dequantize(p, x.scalar_type(), composed).view({out_features, in_features});
    return at::linear(x, weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t out_features = ctx->saved_data["out"].toInt(), in_features = ctx->saved_data["in"].toInt();
    Packed p{saved[0], saved[1], saved[2], saved[3], ctx->saved_data["bits"].toInt(), ctx->saved_data["blocksize"].toInt(), out_features * in_features};
    const at::Tensor& grad = grads[0];
    at::Tensor weight = dequantize(p, grad.scalar_type(), ctx->saved_data["composed"].toBool()).view({out_features, in_features});
    return {grad.matmul(weight), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// --- N-API wrappers --------------------------------------------------------------------------

Packed packed_args(const Napi::CallbackInfo& info, size_t first, const char* op, int64_t numel) {
  c10::optional<at::Tensor> zero = lmf::opt_tensor_arg(info, first + 3, op, "zero");
  return Packed{lmf::tensor_arg(info, first, op, "levels"),
                lmf::tensor_arg(info, first + 1, op, "table"),
                lmf::tensor_arg(info, first + 2, op, "scale"),
                zero.value_or(at::empty({0}, at::TensorOptions().dtype(at::kFloat))),
                lmf::int_arg(info, first + 4, op, "bits"),
                lmf::int_arg(info, first + 5, op, "blocksize"),
                numel};
}

// quantize_4bit(a, blocksize, nf4) -> [packed, absmax]
Napi::Value quantize_4bit_op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& a = lmf::tensor_arg(info, 0, "quantize_4bit", "a");
  int64_t blocksize = lmf::int_arg(info, 1, "quantize_4bit", "blocksize");
  bool nf4 = lmf::bool_arg(info, 2, "quantize_4bit", "nf4");
  try {
    return lmf::wrap_tensor_list(env, quantize_4bit(a, blocksize, nf4));
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "quantize_4bit", error, {{"a", &a}});
  }
}

// quantize_blockwise(a, code, blocksize) -> [levels, absmax]
Napi::Value quantize_blockwise_op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& a = lmf::tensor_arg(info, 0, "quantize_blockwise", "a");
  const at::Tensor& code = lmf::tensor_arg(info, 1, "quantize_blockwise", "code");
  int64_t blocksize = lmf::int_arg(info, 2, "quantize_blockwise", "blocksize");
  try {
    return lmf::wrap_tensor_list(env, quantize_blockwise(a, code, blocksize));
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "quantize_blockwise", error, {{"a", &a}, {"code", &code}});
  }
}

// dequantize(levels, table, scale, zero?, bits, blocksize, numel, dtype, composed) -> [numel]
Napi::Value dequantize_op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t numel = lmf::int_arg(info, 6, "dequantize", "numel");
  Packed p = packed_args(info, 0, "dequantize", numel);
  at::ScalarType dtype = lmf::dtype_arg(info, 7, "dequantize", "dtype");
  bool composed = lmf::bool_arg(info, 8, "dequantize", "composed");
  try {
    return lmf::wrap_tensor(env, dequantize(p, dtype, composed));
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "dequantize", error, {{"levels", &p.levels}, {"scale", &p.scale}});
  }
}

// packed_linear(x, levels, table, scale, zero?, bits, blocksize, out, in, composed) -> [..., out]
Napi::Value packed_linear_op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& x = lmf::tensor_arg(info, 0, "packed_linear", "x");
  int64_t out_features = lmf::int_arg(info, 7, "packed_linear", "out");
  int64_t in_features = lmf::int_arg(info, 8, "packed_linear", "in");
  Packed p = packed_args(info, 1, "packed_linear", out_features * in_features);
  bool composed = lmf::bool_arg(info, 9, "packed_linear", "composed");
  try {
    if (x.size(-1) != in_features) throw std::invalid_argument("packed_linear: x has " + std::to_string(x.size(-1)) + " features, the weight takes " + std::to_string(in_features));
    return lmf::wrap_tensor(env, PackedLinear::apply(x, p.levels, p.table, p.scale, p.zero, p.bits, p.blocksize, out_features, in_features, composed));
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "packed_linear", error, {{"x", &x}, {"levels", &p.levels}});
  }
}

}  // namespace

namespace lmf {
void register_quant(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize_4bit", Napi::Function::New(env, quantize_4bit_op, "quantize_4bit"));
  exports.Set("quantize_blockwise", Napi::Function::New(env, quantize_blockwise_op, "quantize_blockwise"));
  exports.Set("dequantize", Napi::Function::New(env, dequantize_op, "dequantize"));
  exports.Set("packed_linear", Napi::Function::New(env, packed_linear_op, "packed_linear"));
}
}  // namespace lmf
