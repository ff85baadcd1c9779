// Autocast switches, as torch.autocast's __enter__ / __exit__ (torch/amp/autocast_mode.py): while
// enabled for a device, libtorch's AutocastCPU / AutocastCUDA dispatch keys cast the inputs of the
// ops on its lists (linear, matmul, ... to the lower-precision dtype; losses to float32). The keys
// are thread-local, and every op of this addon is dispatched on the thread that calls it.
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "runtime.h"

namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
// libtorch >= 2.4 takes the device type; the per-device functions are deprecated.
bool enabled_on(at::DeviceType device) { return at::autocast::is_autocast_enabled(device); }
void set_enabled_on(at::DeviceType device, bool enabled) { at::autocast::set_autocast_enabled(device, enabled); }
at::ScalarType dtype_on(at::DeviceType device) { return at::autocast::get_autocast_dtype(device); }
void set_dtype_on(at::DeviceType device, at::ScalarType dtype) { at::autocast::set_autocast_dtype(device, dtype); }
#else
bool enabled_on(at::DeviceType device) {
  return device == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_enabled_on(at::DeviceType device, bool enabled) {
  if (device == at::kCUDA) at::autocast::set_enabled(enabled);
  else at::autocast::set_cpu_enabled(enabled);
}
at::ScalarType dtype_on(at::DeviceType device) {
  return device == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_dtype_on(at::DeviceType device, at::ScalarType dtype) {
  if (device == at::kCUDA) at::autocast::set_autocast_gpu_dtype(dtype);
  else at::autocast::set_autocast_cpu_dtype(dtype);
}
#endif

at::DeviceType device_type_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  std::string name = lmf::string_arg(info, i, op, "device_type");
  if (name == "cpu") return at::kCPU;
  if (name == "cuda") return at::kCUDA;
  throw Napi::TypeError::New(info.Env(), std::string(op) + ": device_type must be 'cpu' or 'cuda', got '" + name + "'");
}

Napi::Value state_of(Napi::Env env, at::DeviceType device) {
  auto out = Napi::Object::New(env);
  out.Set("enabled", enabled_on(device));
  out.Set("dtype", static_cast<int>(dtype_on(device)));
  return out;
}

// autocast_state(device_type) -> { enabled, dtype }
Napi::Value autocast_state(const Napi::CallbackInfo& info) {
  return state_of(info.Env(), device_type_arg(info, 0, "autocast_state"));
}

// autocast_enter(device_type, enabled, dtype) -> the previous { enabled, dtype }, for autocast_exit.
Napi::Value autocast_enter(const Napi::CallbackInfo& info) {
  at::DeviceType device = device_type_arg(info, 0, "autocast_enter");
  bool enabled = lmf::bool_arg(info, 1, "autocast_enter", "enabled");
  at::ScalarType dtype = lmf::dtype_arg(info, 2, "autocast_enter", "dtype");
  Napi::Value previous = state_of(info.Env(), device);
  set_enabled_on(device, enabled);
  set_dtype_on(device, dtype);
  at::autocast::increment_nesting();
  return previous;
}

// autocast_exit(device_type, previous_enabled, previous_dtype): the outermost exit drops the cache
// of weights cast during the region (so a later region sees updated weights).
Napi::Value autocast_exit(const Napi::CallbackInfo& info) {
  at::DeviceType device = device_type_arg(info, 0, "autocast_exit");
  bool enabled = lmf::bool_arg(info, 1, "autocast_exit", "previous_enabled");
  at::ScalarType dtype = lmf::dtype_arg(info, 2, "autocast_exit", "previous_dtype");
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_enabled_on(device, enabled);
  set_dtype_on(device, dtype);
  return info.Env().Undefined();
}

}  // namespace

namespace lmf {
void register_autocast(Napi::Env env, Napi::Object exports) {
  exports.Set("autocast_state", Napi::Function::New(env, autocast_state, "autocast_state"));
  exports.Set("autocast_enter", Napi::Function::New(env, autocast_enter, "autocast_enter"));
  exports.Set("autocast_exit", Napi::Function::New(env, autocast_exit, "autocast_exit"));
}
}  // namespace lmf
