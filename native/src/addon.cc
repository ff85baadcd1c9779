// Module entry: engine set-up at load, tensor lifetimes, buffers in and out, RNG, threads,
// build information, attention, and registration of the generated op wrappers.

#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "runtime.h"

namespace lmf {
void register_generated_ops(Napi::Env env, Napi::Object exports);
void register_autograd(Napi::Env env, Napi::Object exports);
void register_serialization(Napi::Env env, Napi::Object exports);
void register_distributed(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);
void register_autocast(Napi::Env env, Napi::Object exports);
void register_rows_linear(Napi::Env env, Napi::Object exports);
}  // namespace lmf

namespace {

Napi::Value dispose(const Napi::CallbackInfo& info) {
  int64_t id = lmf::int_arg(info, 0, "dispose", "tensor");
  return Napi::Boolean::New(info.Env(), lmf::release(id));
}

Napi::Value live_count(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(lmf::live_count()));
}

// from_buffer(bytes, shape, dtype): a new CPU tensor holding a copy of the bytes.
Napi::Value from_buffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() && !info[0].IsArrayBuffer()) {
    throw Napi::TypeError::New(env, "from_buffer: argument 'bytes' must be a TypedArray, Buffer or ArrayBuffer");
  }
  const uint8_t* data;
  size_t length;
  if (info[0].IsArrayBuffer()) {
    auto buffer = info[0].As<Napi::ArrayBuffer>();
    data = static_cast<const uint8_t*>(buffer.Data());
    length = buffer.ByteLength();
  } else {
    auto array = info[0].As<Napi::TypedArray>();
    data = static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
    length = array.ByteLength();
  }
  std::vector<int64_t> shape = lmf::int_list_arg(info, 1, "from_buffer", "shape");
  at::ScalarType dtype = lmf::dtype_arg(info, 2, "from_buffer", "dtype");
  try {
    at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
    size_t expected = tensor.numel() * tensor.element_size();
    if (expected != length) {
      throw Napi::Error::New(env, "from_buffer: " + std::to_string(length) + " bytes given but shape " +
                                      lmf::describe(tensor) + " needs " + std::to_string(expected));
    }
    if (length) std::memcpy(tensor.data_ptr(), data, length);
    return lmf::wrap_tensor(env, tensor);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "from_buffer", error, {});
  }
}

// to_buffer(tensor): the tensor's elements, contiguous, copied to a new ArrayBuffer.
Napi::Value to_buffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& self = lmf::tensor_arg(info, 0, "to_buffer", "self");
  try {
    at::Tensor cpu = self.detach().to(at::kCPU).contiguous();
    size_t length = cpu.numel() * cpu.element_size();
    auto buffer = Napi::ArrayBuffer::New(env, length);
    if (length) std::memcpy(buffer.Data(), cpu.data_ptr(), length);
    return buffer;
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "to_buffer", error, {{"self", &self}});
  }
}

Napi::Value manual_seed(const Napi::CallbackInfo& info) {
  int64_t seed = lmf::int_arg(info, 0, "manual_seed", "seed");
  at::manual_seed(static_cast<uint64_t>(seed));
  return info.Env().Undefined();
}

// The CPU generator's full state, so that a resumed run draws the same numbers.
Napi::Value rng_state(const Napi::CallbackInfo& info) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return lmf::wrap_tensor(info.Env(), generator.get_state());
}

Napi::Value set_rng_state(const Napi::CallbackInfo& info) {
  const at::Tensor& state = lmf::tensor_arg(info, 0, "set_rng_state", "state");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(state);
  } catch (const std::exception& error) {
    lmf::throw_op_error(info.Env(), "set_rng_state", error, {{"state", &state}});
  }
  return info.Env().Undefined();
}

Napi::Value set_num_threads(const Napi::CallbackInfo& info) {
  at::set_num_threads(static_cast<int>(lmf::int_arg(info, 0, "set_num_threads", "threads")));
  return info.Env().Undefined();
}

Napi::Value get_num_threads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

// Build facts for `lmf env`: libtorch version, its configuration text (BLAS, CPU features)
// and the CUDA devices it can see.
Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("torch_version", TORCH_VERSION);
  out.Set("config", at::show_config());
  out.Set("parallel", at::get_parallel_info());
  out.Set("cuda_available", at::hasCUDA());
  out.Set("cuda_device_count", at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0);
  out.Set("num_threads", at::get_num_threads());
  return out;
}

// sdpa(q, k, v, mask?, dropout_p, is_causal): q [B, H, T, D], k/v [B, H, S, D].
Napi::Value sdpa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& query = lmf::tensor_arg(info, 0, "sdpa", "query");
  const at::Tensor& key = lmf::tensor_arg(info, 1, "sdpa", "key");
  const at::Tensor& value = lmf::tensor_arg(info, 2, "sdpa", "value");
  c10::optional<at::Tensor> mask = lmf::opt_tensor_arg(info, 3, "sdpa", "mask");
  double dropout_p = lmf::double_arg(info, 4, "sdpa", "dropout_p");
  bool is_causal = lmf::bool_arg(info, 5, "sdpa", "is_causal");
  try {
#if TORCH_VERSION_MAJOR >= 2
    return lmf::wrap_tensor(env, at::scaled_dot_product_attention(query, key, value, mask, dropout_p, is_causal));
#else
    // libtorch 1.13 has only the private kernel; it is differentiable and matches composed attention.
    auto result = at::_scaled_dot_product_attention(query, key, value, mask, dropout_p, false, is_causal);
    return lmf::wrap_tensor(env, std::get<0>(result));
#endif
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "sdpa", error, {{"query", &query}, {"key", &key}, {"value", &value}});
  }
}

int default_threads() {
  for (const char* name : {"LMF_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* text = std::getenv(name)) {
      int n = std::atoi(text);
      if (n > 0) return n;
    }
  }
  unsigned cores = std::thread::hardware_concurrency();
  return cores ? static_cast<int>(cores) : 1;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  // glibc's allocator keeps its default, adaptive thresholds (as in Python): a fixed 128 KiB
  // mmap threshold made every activation a fresh mmap whose pages fault in on first write,
  // which cost half the time of a LoRA step (bench/BENCHMARKS.md, "Found").
  // libtorch starts with one intra-op thread here; use the cores we have.
  at::set_num_threads(default_threads());

  exports.Set("dispose", Napi::Function::New(env, dispose, "dispose"));
  exports.Set("live_count", Napi::Function::New(env, live_count, "live_count"));
  exports.Set("from_buffer", Napi::Function::New(env, from_buffer, "from_buffer"));
  exports.Set("to_buffer", Napi::Function::New(env, to_buffer, "to_buffer"));
  exports.Set("manual_seed", Napi::Function::New(env, manual_seed, "manual_seed"));
  exports.Set("rng_state", Napi::Function::New(env, rng_state, "rng_state"));
  exports.Set("set_rng_state", Napi::Function::New(env, set_rng_state, "set_rng_state"));
  exports.Set("set_num_threads", Napi::Function::New(env, set_num_threads, "set_num_threads"));
  exports.Set("get_num_threads", Napi::Function::New(env, get_num_threads, "get_num_threads"));
  exports.Set("build_info", Napi::Function::New(env, build_info, "build_info"));
  exports.Set("sdpa", Napi::Function::New(env, sdpa, "sdpa"));
  lmf::register_generated_ops(env, exports);
  lmf::register_autograd(env, exports);
  lmf::register_serialization(env, exports);
  lmf::register_distributed(env, exports);
  lmf::register_quant(env, exports);
  lmf::register_autocast(env, exports);
  lmf::register_rows_linear(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lmfactory, init)
