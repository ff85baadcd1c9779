// The C++ floor for the per-op overhead benchmark (bench/ops.ts): the same `add` of two 1-element
// float32 tensors, called from a C++ loop on the same libtorch, with the result freed each time.
// Usage: op_loop <iterations>  -> prints microseconds per op.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  long iterations = argc > 1 ? std::atol(argv[1]) : 1000000;
  at::Tensor a = at::ones({1});
  at::Tensor b = at::ones({1});
  for (int i = 0; i < 10000; ++i) at::add(a, b, 1);  // warm-up
  auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
    at::Tensor c = at::add(a, b, 1);
  }
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.6f\n", seconds * 1e6 / static_cast<double>(iterations));
  return 0;
}
