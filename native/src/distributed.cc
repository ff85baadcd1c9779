// c10d, PyTorch's own distributed engine: a TCPStore for rendezvous (rank 0 serves it) and one
// process group, Gloo on CPU (NCCL where libtorch has CUDA and the tensors live there), with the
// collectives DistributedDataParallel uses: all-reduce, broadcast, all-gather, barrier. Each call
// waits for its work; a peer that dies or a timeout becomes a JS error naming the collective.
#include "runtime.h"

#ifdef LMF_WITH_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <c10/util/intrusive_ptr.h>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>

namespace {

#ifdef LMF_WITH_C10D
c10::intrusive_ptr<c10d::Store> g_store;
c10::intrusive_ptr<c10d::ProcessGroup> g_group;

c10d::ProcessGroup& group(Napi::Env env, const char* op) {
  if (!g_group) throw Napi::Error::New(env, std::string(op) + ": no process group (call dist_init first)");
  return *g_group;
}

std::string strip(const std::exception& error) {
  std::string message = error.what();
  auto cut = message.find("\nException raised from");
  if (cut != std::string::npos) message = message.substr(0, cut);
  return message;
}

// dist_init(rank, worldSize, masterAddr, masterPort, timeoutMs)
Napi::Value dist_init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dist_init";
  auto rank = lmf::int_arg(info, 0, op, "rank");
  auto world = lmf::int_arg(info, 1, op, "world_size");
  auto addr = lmf::string_arg(info, 2, op, "master_addr");
  auto port = lmf::int_arg(info, 3, op, "master_port");
  auto timeout = std::chrono::milliseconds(lmf::int_arg(info, 4, op, "timeout_ms"));
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(world);
    options.waitWorkers = true;
    options.timeout = timeout;
    g_store = c10::make_intrusive<c10d::TCPStore>(addr, options);
    auto gloo = c10d::ProcessGroupGloo::Options::create();
    gloo->timeout = timeout;
    // GLOO_SOCKET_IFNAME picks the interface, as in PyTorch; otherwise the host's address.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname) {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (addr == "127.0.0.1" || addr == "localhost") {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("lmf", g_store);
    g_group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(rank), static_cast<int>(world), gloo);
  } catch (const std::exception& error) {
    g_group.reset();
    g_store.reset();
    throw Napi::Error::New(env, std::string(op) + "(rank " + std::to_string(rank) + " of " + std::to_string(world) + ", " + addr + ":" +
                                    std::to_string(port) + "): " + strip(error));
  }
  return env.Undefined();
}

// Starts a collective with `start` and waits for it; a c10d error (a peer gone, the timeout) becomes
// one JavaScript error naming the op. Errors already JavaScript's (no process group) pass through.
template <typename Start>
void run_collective(Napi::Env env, const char* op, Start start) {
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = start();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, std::string(op) + ": " + strip(error));
  }
  try {
    work->wait();
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, std::string(op) + ": " + strip(error));
  }
}

// dist_all_reduce(ids, op): in place; op 0 = sum, 1 = max, 2 = min.
Napi::Value dist_all_reduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dist_all_reduce";
  auto tensors = lmf::tensor_list_arg(info, 0, op, "tensors");
  auto kind = lmf::int_arg(info, 1, op, "op");
  c10d::AllreduceOptions options;
  options.reduceOp = kind == 1 ? c10d::ReduceOp::MAX : kind == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
  run_collective(env, op, [&] { return group(env, op).allreduce(tensors, options); });
  return env.Undefined();
}

// dist_broadcast(ids, root): in place.
Napi::Value dist_broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dist_broadcast";
  auto tensors = lmf::tensor_list_arg(info, 0, op, "tensors");
  c10d::BroadcastOptions options;
  options.rootRank = lmf::int_arg(info, 1, op, "root");
  run_collective(env, op, [&] { return group(env, op).broadcast(tensors, options); });
  return env.Undefined();
}

// dist_all_gather(id) -> ids of every rank's tensor, in rank order.
Napi::Value dist_all_gather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dist_all_gather";
  const auto& input = lmf::tensor_arg(info, 0, op, "tensor");
  auto& pg = group(env, op);
  std::vector<at::Tensor> outputs;
  for (int r = 0; r < pg.getSize(); r++) outputs.push_back(at::empty_like(input));
  std::vector<std::vector<at::Tensor>> out{outputs};
  std::vector<at::Tensor> in{input};
  run_collective(env, op, [&] { return pg.allgather(out, in); });
  return lmf::wrap_tensor_list(env, out[0]);
}

Napi::Value dist_barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "dist_barrier";
  run_collective(env, op, [&] { return group(env, op).barrier(); });
  return env.Undefined();
}

Napi::Value dist_destroy(const Napi::CallbackInfo& info) {
  g_group.reset();
  g_store.reset();
  return info.Env().Undefined();
}
#endif

Napi::Value dist_available(const Napi::CallbackInfo& info) {
#ifdef LMF_WITH_C10D
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace

namespace lmf {

void register_distributed(Napi::Env env, Napi::Object exports) {
  exports.Set("dist_available", Napi::Function::New(env, dist_available, "dist_available"));
#ifdef LMF_WITH_C10D
  exports.Set("dist_init", Napi::Function::New(env, dist_init, "dist_init"));
  exports.Set("dist_all_reduce", Napi::Function::New(env, dist_all_reduce, "dist_all_reduce"));
  exports.Set("dist_broadcast", Napi::Function::New(env, dist_broadcast, "dist_broadcast"));
  exports.Set("dist_all_gather", Napi::Function::New(env, dist_all_gather, "dist_all_gather"));
  exports.Set("dist_barrier", Napi::Function::New(env, dist_barrier, "dist_barrier"));
  exports.Set("dist_destroy", Napi::Function::New(env, dist_destroy, "dist_destroy"));
#endif
}

}  // namespace lmf
