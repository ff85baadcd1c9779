// Handle table, argument readers and error formatting (see runtime.h).
#include "runtime.h"

#include <cmath>
#include <sstream>

namespace lmf {

namespace {
std::vector<at::Tensor> table;
std::vector<int64_t> free_ids;
int64_t live = 0;

[[noreturn]] void type_error(const Napi::CallbackInfo& info, const char* op, const char* name, const char* want) {
  throw Napi::TypeError::New(info.Env(), std::string(op) + ": argument '" + name + "' must be " + want);
}
}  // namespace

int64_t store(at::Tensor tensor) {
  if (!tensor.defined()) return -1;
  ++live;
  if (!free_ids.empty()) {
    int64_t id = free_ids.back();
    free_ids.pop_back();
    table[id] = std::move(tensor);
    return id;
  }
  table.push_back(std::move(tensor));
  return static_cast<int64_t>(table.size()) - 1;
}

const at::Tensor& lookup(int64_t id, const char* op, const char* arg) {
  if (id < 0 || id >= static_cast<int64_t>(table.size()) || !table[id].defined()) {
    throw std::invalid_argument(std::string(op) + ": argument '" + arg + "' is a disposed or unknown tensor (id " +
                                std::to_string(id) + ")");
  }
  return table[id];
}

bool release(int64_t id) {
  if (id < 0 || id >= static_cast<int64_t>(table.size()) || !table[id].defined()) return false;
  table[id] = at::Tensor();
  free_ids.push_back(id);
  --live;
  return true;
}

int64_t live_count() { return live; }

const at::Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsNumber()) type_error(info, op, name, "a Tensor");
  int64_t id = info[i].As<Napi::Number>().Int64Value();
  try {
    return lookup(id, op, name);
  } catch (const std::invalid_argument& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

c10::optional<at::Tensor> opt_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (info[i].IsNull() || info[i].IsUndefined()) return c10::nullopt;
  return tensor_arg(info, i, op, name);
}

std::vector<at::Tensor> tensor_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsArray()) type_error(info, op, name, "an array of Tensors");
  auto array = info[i].As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k) {
    Napi::Value v = array[k];
    if (!v.IsNumber()) type_error(info, op, name, "an array of Tensors");
    try {
      out.push_back(lookup(v.As<Napi::Number>().Int64Value(), op, name));
    } catch (const std::invalid_argument& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }
  return out;
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsNumber()) type_error(info, op, name, "an integer");
  return info[i].As<Napi::Number>().Int64Value();
}

c10::optional<int64_t> opt_int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (info[i].IsNull() || info[i].IsUndefined()) return c10::nullopt;
  return int_arg(info, i, op, name);
}

double double_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsNumber()) type_error(info, op, name, "a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

at::Scalar scalar_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  double value = double_arg(info, i, op, name);
  // Python's `int_tensor + 1` stays integral; a JS number has no int/float split, so an integral
  // value becomes an integer Scalar (a float tensor still gets a float result).
  if (std::nearbyint(value) == value && std::abs(value) < 9.007199254740992e15) return at::Scalar(static_cast<int64_t>(value));
  return at::Scalar(value);
}

c10::optional<double> opt_double_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (info[i].IsNull() || info[i].IsUndefined()) return c10::nullopt;
  return double_arg(info, i, op, name);
}

bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsBoolean()) type_error(info, op, name, "a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> int_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsArray()) type_error(info, op, name, "an array of integers");
  auto array = info[i].As<Napi::Array>();
  std::vector<int64_t> out(array.Length());
  for (uint32_t k = 0; k < array.Length(); ++k) {
    Napi::Value v = array[k];
    if (!v.IsNumber()) type_error(info, op, name, "an array of integers");
    out[k] = v.As<Napi::Number>().Int64Value();
  }
  return out;
}

at::ScalarType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return static_cast<at::ScalarType>(int_arg(info, i, op, name));
}

at::Device device_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  std::string text = string_arg(info, i, op, name);
  try {
    return at::Device(text);
  } catch (const std::exception&) {
    throw Napi::Error::New(info.Env(), std::string(op) + ": unknown device '" + text + "' (use cpu, cuda or cuda:N)");
  }
}

std::string string_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (!info[i].IsString()) type_error(info, op, name, "a string");
  return info[i].As<Napi::String>().Utf8Value();
}

at::TensorOptions options(at::ScalarType dtype, at::Device device) {
  return at::TensorOptions().dtype(dtype).device(device);
}

c10::optional<at::Scalar> opt_scalar(c10::optional<double> value) {
  if (!value) return c10::nullopt;
  // As in scalar_arg: an integral bound keeps an integer tensor integral (torch.clamp(int, -1, 1)).
  if (std::nearbyint(*value) == *value && std::abs(*value) < 9.007199254740992e15) return at::Scalar(static_cast<int64_t>(*value));
  return at::Scalar(*value);
}

Napi::Value wrap_tensor(Napi::Env env, const at::Tensor& tensor) {
  if (!tensor.defined()) return env.Null();
  return Napi::Number::New(env, static_cast<double>(store(tensor)));
}

Napi::Value wrap_tensor_list(Napi::Env env, const std::vector<at::Tensor>& tensors) {
  auto array = Napi::Array::New(env, tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) array.Set(static_cast<uint32_t>(k), wrap_tensor(env, tensors[k]));
  return array;
}

Napi::Value wrap_int_list(Napi::Env env, at::IntArrayRef values) {
  auto array = Napi::Array::New(env, values.size());
  for (size_t k = 0; k < values.size(); ++k) array.Set(static_cast<uint32_t>(k), static_cast<double>(values[k]));
  return array;
}

std::string describe(const at::Tensor& tensor) {
  if (!tensor.defined()) return "undefined";
  std::ostringstream out;
  out << "[";
  for (size_t k = 0; k < tensor.sizes().size(); ++k) out << (k ? ", " : "") << tensor.sizes()[k];
  out << "] " << c10::toString(tensor.scalar_type()) << " " << tensor.device();
  return out.str();
}

void throw_op_error(Napi::Env env, const char* op, const std::exception& error,
                    std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  std::string message;
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = error.what();
  }
  // Drop libtorch's trailing location lines ("Exception raised from ...") and keep the reason.
  auto cut = message.find("\nException raised from");
  if (cut != std::string::npos) message = message.substr(0, cut);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  // Without CUDA, libtorch answers a cuda request with a page about dispatch keys; say what it means.
  if (!at::hasCUDA() && (message.find("'CUDA' backend") != std::string::npos ||
                         message.find("not linked with support for cuda") != std::string::npos)) {
    message = "device cuda requested, but this libtorch has no CUDA support or no GPU is visible (use cpu)";
  }
  std::ostringstream out;
  out << op << "(";
  bool first = true;
  for (auto& [name, tensor] : tensors) {
    out << (first ? "" : ", ") << name << ": " << describe(*tensor);
    first = false;
  }
  out << "): " << message;
  throw Napi::Error::New(env, out.str());
}

}  // namespace lmf
