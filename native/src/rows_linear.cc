// rows_linear(x [N, C], w [O, C], bias? [O]) -> [N, O], float32 on the CPU: the decode step's
// linear layers, computed so that a row's result does not depend on the other rows (batch
// invariance). BLAS gemm picks its kernels and blocking by the matrix sizes, so a sequence decoded
// beside others would get other roundings than alone; here every output element is one dot
// product in a fixed order (16- or 8-lane FMA chains over C, then a fixed reduction), whatever N,
// the row's position or the thread split. Each weight row is read once per call for all N rows,
// which is what makes a batched decode step cheaper than N single ones.
#include <ATen/Parallel.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "runtime.h"

namespace {

#if defined(__x86_64__)

// AVX-512: tiles of up to 4 rows x 4 outputs, 16 independent accumulators of 16 lanes.
template <int NR, int OR>
__attribute__((target("avx512f"))) void tile512(const float* x, const float* w, int64_t C, float* out, int64_t out_stride,
                                               const float* bias) {
  __m512 acc[NR][OR];
  _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++)
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= C; c += 16) {
    __m512 wv[OR];
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) wv[j] = _mm512_loadu_ps(w + j * C + c);
    _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++) {
      __m512 xv = _mm512_loadu_ps(x + i * C + c);
      _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (c < C) {
    __mmask16 mask = static_cast<__mmask16>((1u << (C - c)) - 1);
    __m512 wv[OR];
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) wv[j] = _mm512_maskz_loadu_ps(mask, w + j * C + c);
    _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + i * C + c);
      _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++)
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) out[i * out_stride + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

// AVX2 + FMA: tiles of up to 3 rows x 4 outputs, 8 lanes; the tail is masked the same way.
__attribute__((target("avx2,fma"))) inline float reduce256(__m256 v) {
  __m128 low = _mm256_castps256_ps128(v);
  __m128 high = _mm256_extractf128_ps(v, 1);
  __m128 sum = _mm_add_ps(low, high);
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
  return _mm_cvtss_f32(sum);
}

template <int NR, int OR>
__attribute__((target("avx2,fma"))) void tile256(const float* x, const float* w, int64_t C, float* out, int64_t out_stride,
                                                const float* bias) {
  __m256 acc[NR][OR];
  _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++)
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 wv[OR];
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) wv[j] = _mm256_loadu_ps(w + j * C + c);
    _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++) {
      __m256 xv = _mm256_loadu_ps(x + i * C + c);
      _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (c < C) {
    alignas(32) int lanes[8];
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) lanes[k] = c + k < C ? -1 : 0;
    __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    __m256 wv[OR];
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) wv[j] = _mm256_maskload_ps(w + j * C + c, mask);
    _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++) {
      __m256 xv = _mm256_maskload_ps(x + i * C + c, mask);
      _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  _Pragma("GCC unroll 8") for (int i = 0; i < NR; i++)
    _Pragma("GCC unroll 8") for (int j = 0; j < OR; j++) out[i * out_stride + j] = reduce256(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

using TileFn = void (*)(const float*, const float*, int64_t, float*, int64_t, const float*);

// The tile functions of one instruction set, indexed [rows - 1][outputs - 1].
template <int NR, int OR>
struct T512 {
  static constexpr TileFn fn = &tile512<NR, OR>;
};
template <int NR, int OR>
struct T256 {
  static constexpr TileFn fn = &tile256<NR, OR>;
};

constexpr int ROWS_512 = 4;
constexpr int ROWS_256 = 3;
constexpr int OUTS = 4;

const TileFn TILES_512[ROWS_512][OUTS] = {
    {T512<1, 1>::fn, T512<1, 2>::fn, T512<1, 3>::fn, T512<1, 4>::fn},
    {T512<2, 1>::fn, T512<2, 2>::fn, T512<2, 3>::fn, T512<2, 4>::fn},
    {T512<3, 1>::fn, T512<3, 2>::fn, T512<3, 3>::fn, T512<3, 4>::fn},
    {T512<4, 1>::fn, T512<4, 2>::fn, T512<4, 3>::fn, T512<4, 4>::fn},
};
const TileFn TILES_256[ROWS_256][OUTS] = {
    {T256<1, 1>::fn, T256<1, 2>::fn, T256<1, 3>::fn, T256<1, 4>::fn},
    {T256<2, 1>::fn, T256<2, 2>::fn, T256<2, 3>::fn, T256<2, 4>::fn},
    {T256<3, 1>::fn, T256<3, 2>::fn, T256<3, 3>::fn, T256<3, 4>::fn},
};

// Which kernel set this CPU runs (0: none, fall back to at::linear).
int instruction_set() {
  static const int found = __builtin_cpu_supports("avx512f") ? 512 : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 256 : 0;
  return found;
}

#else
int instruction_set() { return 0; }
#endif

// rows_linear(x, w, bias?) -> [N, O]; falls back to at::linear where the kernels do not apply
// (not float32 on the CPU, or a CPU without AVX2).
Napi::Value rows_linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& input = lmf::tensor_arg(info, 0, "rows_linear", "input");
  const at::Tensor& weight = lmf::tensor_arg(info, 1, "rows_linear", "weight");
  c10::optional<at::Tensor> bias = lmf::opt_tensor_arg(info, 2, "rows_linear", "bias");
  try {
    bool fits = instruction_set() != 0 && input.dim() == 2 && weight.dim() == 2 && input.size(1) == weight.size(1) &&
                input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && input.device().is_cpu() &&
                weight.device().is_cpu() && (!bias || (bias->scalar_type() == at::kFloat && bias->numel() == weight.size(0)));
    if (!fits) return lmf::wrap_tensor(env, at::linear(input, weight, bias.value_or(at::Tensor())));
#if defined(__x86_64__)
    at::Tensor x = input.contiguous();
    at::Tensor w = weight.contiguous();
    at::Tensor b = bias ? bias->contiguous() : at::Tensor();
    const int64_t N = x.size(0), C = x.size(1), O = w.size(0);
    at::Tensor out = at::empty({N, O}, x.options());
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
    float* op = out.data_ptr<float>();
    const bool wide = instruction_set() == 512;
    const int rows = wide ? ROWS_512 : ROWS_256;
    // Threads split the outputs (weight rows), never C: the split cannot change a dot product.
    at::parallel_for(0, (O + OUTS - 1) / OUTS, 16, [&](int64_t first, int64_t last) {
      for (int64_t block = first; block < last; block++) {
        const int64_t o = block * OUTS;
        const int outs = static_cast<int>(std::min<int64_t>(OUTS, O - o));
        for (int64_t n = 0; n < N; n += rows) {
          const int take = static_cast<int>(std::min<int64_t>(rows, N - n));
          TileFn fn = wide ? TILES_512[take - 1][outs - 1] : TILES_256[take - 1][outs - 1];
          fn(xp + n * C, wp + o * C, C, op + n * O + o, O, bp ? bp + o : nullptr);
        }
      }
    });
    return lmf::wrap_tensor(env, out);
#else
    return lmf::wrap_tensor(env, at::linear(input, weight, bias.value_or(at::Tensor())));
#endif
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "rows_linear", error, {{"input", &input}, {"weight", &weight}});
  }
}

// Whether rows_linear has a batch-invariant kernel on this CPU (else it is at::linear).
Napi::Value rows_linear_invariant(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), instruction_set() != 0);
}

}  // namespace

namespace lmf {
void register_rows_linear(Napi::Env env, Napi::Object exports) {
  exports.Set("rows_linear", Napi::Function::New(env, rows_linear, "rows_linear"));
  exports.Set("rows_linear_invariant", Napi::Function::New(env, rows_linear_invariant, "rows_linear_invariant"));
}
}  // namespace lmf
