// What the engine runs on: libtorch version, the BLAS actually loaded, threads and devices.
// Printed by `lmf env`; the BLAS line matters because Debian's libtorch on the reference BLAS
// is ~15x slower at matmul than on OpenBLAS.
import { readFileSync, realpathSync } from "node:fs";
import { addonBuild, native, threadPoolNote } from "./native.ts";
import { ones } from "./creation.ts";
import { tidy } from "./scope.ts";

export interface EngineInfo {
  torchVersion: string;
  blas: string;
  blasLibrary: string | null;
  threads: number;
  /** How idle OpenMP threads wait: the user's OMP_WAIT_POLICY / GOMP_SPINCOUNT, or lmfactory's choice. */
  threadWait: string;
  cudaAvailable: boolean;
  cudaDevices: number;
  cpuCapability: string | null;
}

/** The BLAS shared library mapped into this process (after one matmul has loaded it). */
function loadedBlas(): string | null {
  // Ones, not random values: asking what the engine runs on must not move the generator a run seeded.
  tidy(() => ones([8, 8]).matmul(ones([8, 8])));
  let maps: string;
  try {
    maps = readFileSync("/proc/self/maps", "utf8");
  } catch {
    return null;
  }
  const paths = new Set(
    maps
      .split("\n")
      .map((line) => line.slice(line.indexOf("/")))
      .filter((path) => path.startsWith("/") && /lib(open)?blas|libmkl|libblis|libflexiblas/.test(path)),
  );
  const real = [...paths].map((path) => {
    try {
      return realpathSync(path);
    } catch {
      return path;
    }
  });
  return real.sort((a, b) => Number(/openblas|mkl|blis/.test(b)) - Number(/openblas|mkl|blis/.test(a)))[0] ?? null;
}

export function engineInfo(): EngineInfo {
  const build = native.build_info();
  const library = loadedBlas();
  let blas = "unknown";
  if (library) {
    if (/openblas/.test(library)) blas = "OpenBLAS";
    else if (/mkl/.test(library)) blas = "MKL";
    else if (/blis/.test(library)) blas = "BLIS";
    else if (/blas\/libblas|libblas\.so/.test(library)) blas = "reference BLAS (slow: install libopenblas0-pthread)";
  } else if (/MKL/.test(build.config) && /BLAS_INFO=mkl/.test(build.config)) {
    blas = "MKL (linked)";
  }
  const capability = /CPU capability usage: (\S+)/.exec(build.config)?.[1] ?? null;
  return {
    torchVersion: build.torch_version,
    blas,
    blasLibrary: library,
    threads: build.num_threads,
    threadWait:
      threadPoolNote ??
      (process.env.OMP_WAIT_POLICY || process.env.GOMP_SPINCOUNT
        ? `as set: OMP_WAIT_POLICY=${process.env.OMP_WAIT_POLICY ?? ""} GOMP_SPINCOUNT=${process.env.GOMP_SPINCOUNT ?? ""}`
        : "OpenMP default"),
    cudaAvailable: build.cuda_available,
    cudaDevices: build.cuda_device_count,
    cpuCapability: capability,
  };
}

/**
 * Whether libtorch's CPU bfloat16 matmul has its fast (oneDNN) path here: libtorch 1.13 takes it
 * only on CPUs with AVX-512 BW, VL and DQ, and otherwise runs a reference loop tens of times
 * slower than float32 (40x for a LoRA step measured on an AVX2-only CPU). Null where unknown
 * (not Linux/x86, or libtorch >= 2, whose conditions differ).
 */
export function cpuBf16MatmulFast(): boolean | null {
  if (process.arch !== "x64" || Number(native.build_info().torch_version.split(".")[0]) >= 2) return null;
  let flags: string;
  try {
    flags = /^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "";
  } catch {
    return null;
  }
  const has = new Set(flags.trim().split(/\s+/));
  return has.has("avx512bw") && has.has("avx512vl") && has.has("avx512dq");
}

export function engineReport(): string {
  const info = engineInfo();
  return [
    `libtorch       ${info.torchVersion}`,
    `BLAS           ${info.blas}${info.blasLibrary ? ` (${info.blasLibrary})` : ""}`,
    `CPU kernels    ${info.cpuCapability ?? "unknown"}${cpuBf16MatmulFast() === false ? "; bfloat16 matmul on libtorch's slow reference loop (no AVX-512 BW/VL/DQ): prefer fp32 on this CPU" : ""}`,
    `threads        ${info.threads} (idle: ${info.threadWait})`,
    `devices        cpu${info.cudaAvailable ? `, cuda x${info.cudaDevices}` : " (no CUDA in this libtorch build or no GPU)"}`,
    `node           ${process.version}`,
    `engine         ${addonBuild}`,
  ].join("\n");
}
