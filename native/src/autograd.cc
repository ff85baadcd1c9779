// Autograd entry points: backward, grad access, grad mode, and torch.autograd.grad for
// recomputing a segment (gradient checkpointing) from TypeScript.
#include <torch/csrc/autograd/autograd.h>

#include "runtime.h"

namespace {

// backward(output, grad?, retain_graph)
Napi::Value backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const at::Tensor& output = lmf::tensor_arg(info, 0, "backward", "output");
  c10::optional<at::Tensor> gradient = lmf::opt_tensor_arg(info, 1, "backward", "gradient");
  bool retain_graph = lmf::bool_arg(info, 2, "backward", "retain_graph");
  try {
    output.backward(gradient.value_or(at::Tensor()), retain_graph, false);
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "backward", error, {{"output", &output}});
  }
  return env.Undefined();
}

// autograd_grad(outputs, inputs, grad_outputs, retain_graph, allow_unused) -> grads (null when unused)
Napi::Value autograd_grad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto outputs = lmf::tensor_list_arg(info, 0, "autograd_grad", "outputs");
  auto inputs = lmf::tensor_list_arg(info, 1, "autograd_grad", "inputs");
  auto grad_outputs = lmf::tensor_list_arg(info, 2, "autograd_grad", "grad_outputs");
  bool retain_graph = lmf::bool_arg(info, 3, "autograd_grad", "retain_graph");
  bool allow_unused = lmf::bool_arg(info, 4, "autograd_grad", "allow_unused");
  try {
    auto grads = torch::autograd::grad(outputs, inputs, grad_outputs, retain_graph, false, allow_unused);
    return lmf::wrap_tensor_list(env, grads);
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "autograd_grad", error, {});
  }
}

// set_grad(tensor, grad?): replace (or clear, with null) the accumulated gradient.
Napi::Value set_grad(const Napi::CallbackInfo& info) {
  const at::Tensor& self = lmf::tensor_arg(info, 0, "set_grad", "self");
  c10::optional<at::Tensor> grad = lmf::opt_tensor_arg(info, 1, "set_grad", "grad");
  self.mutable_grad() = grad.value_or(at::Tensor());
  return info.Env().Undefined();
}

// set_grad_enabled(enabled) -> previous
Napi::Value set_grad_enabled(const Napi::CallbackInfo& info) {
  bool previous = at::GradMode::is_enabled();
  at::GradMode::set_enabled(lmf::bool_arg(info, 0, "set_grad_enabled", "enabled"));
  return Napi::Boolean::New(info.Env(), previous);
}

Napi::Value is_grad_enabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled());
}

}  // namespace

namespace lmf {
void register_autograd(Napi::Env env, Napi::Object exports) {
  exports.Set("backward", Napi::Function::New(env, backward, "backward"));
  exports.Set("autograd_grad", Napi::Function::New(env, autograd_grad, "autograd_grad"));
  exports.Set("set_grad", Napi::Function::New(env, set_grad, "set_grad"));
  exports.Set("set_grad_enabled", Napi::Function::New(env, set_grad_enabled, "set_grad_enabled"));
  exports.Set("is_grad_enabled", Napi::Function::New(env, is_grad_enabled, "is_grad_enabled"));
}
}  // namespace lmf
