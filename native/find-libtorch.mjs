// Finds the libtorch to build against, in this order: LIBTORCH (a libtorch folder), the torch
// package of python3 when it ships headers, the system one (Debian/Ubuntu libtorch-dev).
// `node find-libtorch.mjs json` prints what was found; the other modes print gyp-ready lists.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";

function fromFolder(root, source) {
  const include = join(root, "include");
  const lib = join(root, "lib");
  if (!existsSync(join(include, "ATen/ATen.h")) || !existsSync(join(lib, "libtorch_cpu.so"))) return null;
  let abi = null;
  const cmake = join(root, "share/cmake/Torch/TorchConfig.cmake");
  if (existsSync(cmake)) {
    const m = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(readFileSync(cmake, "utf8"));
    if (m) abi = m[1];
  }
  return { source, include: [include, join(include, "torch/csrc/api/include")], lib, abi, rpath: true };
}

function fromPython() {
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = execFileSync(
        python,
        ["-c", "import torch,os;print(os.path.dirname(torch.__file__));print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"],
        { stdio: ["ignore", "pipe", "ignore"], timeout: 60000 },
      )
        .toString()
        .trim()
        .split("\n");
      const found = fromFolder(out[0], `python torch (${python})`);
      if (found) return { ...found, abi: out[1] };
    } catch {
      // not importable from this interpreter
    }
  }
  return null;
}

function fromSystem() {
  const lib = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"].find((dir) =>
    existsSync(join(dir, "libtorch_cpu.so")),
  );
  if (!existsSync("/usr/include/ATen/ATen.h") || !lib) return null;
  return { source: "system", include: ["/usr/include", "/usr/include/torch/csrc/api/include"], lib, abi: null, rpath: false };
}

export function findLibtorch() {
  if (process.env.LIBTORCH) {
    const found = fromFolder(process.env.LIBTORCH, `LIBTORCH=${process.env.LIBTORCH}`);
    if (!found) throw new Error(`LIBTORCH=${process.env.LIBTORCH} has no include/ATen/ATen.h and lib/libtorch_cpu.so`);
    return found;
  }
  return fromPython() ?? fromSystem();
}

/**
 * The BLAS libraries libtorch resolves to (real paths, so Debian's libblas.so.3 alternative shows
 * which implementation it is). Read when the engine loads: OpenBLAS built on pthreads keeps a
 * thread pool of its own beside libtorch's OpenMP one, and the two must not spin against each other.
 */
function blasLibraries(lib) {
  try {
    const out = execFileSync("ldd", [join(lib, "libtorch_cpu.so")], { stdio: ["ignore", "pipe", "ignore"] }).toString();
    return [...out.matchAll(/=>\s*(\S*(?:blas|mkl)\S*)/g)].map((match) => realpathSync(match[1]));
  } catch {
    return [];
  }
}

/**
 * c10d with Gloo (distributed training on CPU): libtorch's c10d headers, Gloo's own headers and
 * library (Debian's libgloo-dev; a pytorch.org libtorch bundles Gloo inside libtorch_cpu).
 */
function findC10d(found) {
  const header = found.include.map((dir) => join(dir, "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")).find(existsSync);
  if (!header) return null;
  const glooHeaders = [...found.include, "/usr/include"].some((dir) => existsSync(join(dir, "gloo/config.h")));
  if (!glooHeaders) return null;
  const gloo = ["/usr/lib/libgloo.so.0", "/usr/lib/x86_64-linux-gnu/libgloo.so.0", "/usr/lib/aarch64-linux-gnu/libgloo.so.0"].find(existsSync);
  // A libtorch that carries Gloo itself needs no separate library.
  return { gloo: gloo ?? "" };
}

const mode = process.argv[2];
if (mode) {
  const found = findLibtorch();
  if (!found) {
    console.error("libtorch not found");
    process.exit(1);
  }
  const cuda = existsSync(join(found.lib, "libtorch_cuda.so"));
  const c10d = findC10d(found);
  if (mode === "json") console.log(JSON.stringify({ ...found, cuda, c10d: c10d !== null, blas: blasLibraries(found.lib) }));
  if (mode === "include") console.log(found.include.join(" "));
  if (mode === "defines") {
    const defines = found.abi === null ? [] : [`_GLIBCXX_USE_CXX11_ABI=${found.abi}`];
    if (c10d) defines.push("LMF_WITH_C10D", "USE_C10D_GLOO");
    console.log(defines.join(" "));
  }
  if (mode === "libs") {
    // --no-as-needed: nothing references libtorch_cuda directly, and without it the linker
    // drops the library, so CUDA kernels never register and `cuda` devices look absent.
    const libs = [`-L${found.lib}`, "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10"];
    if (cuda) libs.push("-ltorch_cuda", "-lc10_cuda");
    libs.push("-Wl,--as-needed");
    if (c10d) libs.push(c10d.gloo);
    if (found.rpath) libs.push(`-Wl,-rpath,${found.lib}`);
    console.log(libs.join(" "));
  }
}
