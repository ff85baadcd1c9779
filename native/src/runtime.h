// The addon's shared runtime: the tensor handle table, argument readers and the one error path.
// JS never holds a tensor object, only an integer id into this table (cheaper per call than one
// ObjectWrap per tensor); every op wrapper reads ids, calls ATen, and stores its results here.
#pragma once
#include <ATen/ATen.h>
#include <napi.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace lmf {

// Handle table. Ids are reused after dispose; -1 means "no tensor" (an undefined at::Tensor).
int64_t store(at::Tensor tensor);
const at::Tensor& lookup(int64_t id, const char* op, const char* arg);
bool release(int64_t id);
int64_t live_count();

// Argument readers: each checks the JS type and names the op and argument when it is wrong.
const at::Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
c10::optional<at::Tensor> opt_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
std::vector<at::Tensor> tensor_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
c10::optional<int64_t> opt_int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
double double_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
at::Scalar scalar_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
c10::optional<double> opt_double_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
std::vector<int64_t> int_list_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
at::ScalarType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
at::Device device_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
std::string string_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);

at::TensorOptions options(at::ScalarType dtype, at::Device device);
c10::optional<at::Scalar> opt_scalar(c10::optional<double> value);

// Result writers.
Napi::Value wrap_tensor(Napi::Env env, const at::Tensor& tensor);
Napi::Value wrap_tensor_list(Napi::Env env, const std::vector<at::Tensor>& tensors);
Napi::Value wrap_int_list(Napi::Env env, at::IntArrayRef values);

// The one error path: a libtorch error becomes a JS Error naming the op and the shapes of its
// tensor arguments, without libtorch's multi-kilobyte C++ backtrace.
[[noreturn]] void throw_op_error(Napi::Env env, const char* op, const std::exception& error,
                                 std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors);
std::string describe(const at::Tensor& tensor);

}  // namespace lmf
