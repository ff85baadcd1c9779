// PyTorch `.bin` files (torch.save zip archives) through libtorch's own pickler: a dict of
// name -> tensor, as Hugging Face writes pytorch_model.bin; and raw tensor bytes read from an open
// file straight into a new tensor (safetensors), with no intermediate buffer.
#include <torch/csrc/jit/serialization/pickle.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "runtime.h"

namespace {

// pickle_save(names, tensors, path)
Napi::Value pickle_save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "pickle_save: argument 'names' must be an array of strings");
  auto names = info[0].As<Napi::Array>();
  auto tensors = lmf::tensor_list_arg(info, 1, "pickle_save", "tensors");
  std::string path = lmf::string_arg(info, 2, "pickle_save", "path");
  if (names.Length() != tensors.size()) throw Napi::Error::New(env, "pickle_save: names and tensors differ in length");
  try {
    c10::Dict<std::string, at::Tensor> dict;
    for (uint32_t k = 0; k < names.Length(); ++k) {
      Napi::Value name = names[k];
      dict.insert(name.As<Napi::String>().Utf8Value(), tensors[k].detach().to(at::kCPU).contiguous());
    }
    std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "pickle_save", error, {});
  }
  return env.Undefined();
}

// pickle_load(path) -> { names, tensors }
Napi::Value pickle_load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = lmf::string_arg(info, 0, "pickle_load", "path");
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c10::IValue value = torch::jit::pickle_load(bytes);
    if (!value.isGenericDict()) throw std::runtime_error(path + " does not hold a dict of tensors");
    auto names = Napi::Array::New(env);
    auto tensors = Napi::Array::New(env);
    uint32_t k = 0;
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) continue;
      names.Set(k, entry.key().toStringRef());
      tensors.Set(k, lmf::wrap_tensor(env, entry.value().toTensor()));
      ++k;
    }
    auto out = Napi::Object::New(env);
    out.Set("names", names);
    out.Set("tensors", tensors);
    return out;
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "pickle_load", error, {});
  }
}

// read_tensor(fd, position, shape, dtype) -> [tensor, bytes read]: a new CPU tensor filled from
// the file's bytes at `position` (fewer bytes read than the tensor holds means the file is short).
Napi::Value read_tensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(lmf::int_arg(info, 0, "read_tensor", "fd"));
  int64_t position = lmf::int_arg(info, 1, "read_tensor", "position");
  std::vector<int64_t> shape = lmf::int_list_arg(info, 2, "read_tensor", "shape");
  at::ScalarType dtype = lmf::dtype_arg(info, 3, "read_tensor", "dtype");
  try {
    at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
    char* data = static_cast<char*>(tensor.data_ptr());
    const size_t length = tensor.numel() * tensor.element_size();
    size_t done = 0;
    while (done < length) {
      ssize_t got = pread(fd, data + done, length - done, static_cast<off_t>(position + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw std::runtime_error(std::string("read failed: ") + std::strerror(errno));
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    auto out = Napi::Array::New(env, 2);
    out.Set(uint32_t{0}, lmf::wrap_tensor(env, tensor));
    out.Set(uint32_t{1}, Napi::Number::New(env, static_cast<double>(done)));
    return out;
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    lmf::throw_op_error(env, "read_tensor", error, {});
  }
}

}  // namespace

namespace lmf {
void register_serialization(Napi::Env env, Napi::Object exports) {
  exports.Set("read_tensor", Napi::Function::New(env, read_tensor, "read_tensor"));
  exports.Set("pickle_save", Napi::Function::New(env, pickle_save, "pickle_save"));
  exports.Set("pickle_load", Napi::Function::New(env, pickle_load, "pickle_load"));
}
}  // namespace lmf
