#!/usr/bin/env bash
# The GPU run in one command, for a machine with CUDA, PyTorch 2.x, transformers and PEFT, no
# Node.js and no network: builds the addon against python3's torch (its libtorch, with CUDA),
# runs the device op checks (bench/gpu/ops_check.ts) and the LoRA SFT step against transformers +
# PEFT (bench/gpu/lora_step.ts). Copy the repository with its node_modules, and an extracted
# Node.js 20 release (bin/node and include/node, so node-gyp needs no download), then:
#   bash bench/gpu/run.sh --node /path/to/node-v20-linux-x64/bin/node
# Options: --device cuda|cpu (default: cuda when torch sees a GPU), --skip-build, and for the step
# --steps N --batch B --seq T --model <HF folder>. Everything runs on the CPU too (device cpu), the
# transformers comparison skipped when transformers is absent. Results: bench/results/gpu_*.
set -euo pipefail
cd "$(dirname "$0")/../.."

node_bin=$(command -v node || true)
device=""
skip_build=0
step_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --node) node_bin="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    --steps|--batch|--seq|--model|--warmup) step_args+=("$1" "$2"); shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
fail() { echo "run.sh: $*" >&2; exit 1; }

[ -n "$node_bin" ] && [ -x "$node_bin" ] || fail "no Node.js found: pass --node /path/to/node-v20.../bin/node"
export PATH="$(cd "$(dirname "$node_bin")" && pwd):$PATH"
[ -d node_modules/node-addon-api ] && [ -d node_modules/tsx ] || fail "node_modules is missing or incomplete: copy the repository together with its node_modules"
command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null || fail "python3 cannot import torch"
if [ -z "$device" ]; then device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"); fi
mkdir -p bench/results
log=bench/results/gpu_run.log
exec > >(tee "$log") 2>&1

echo "== machine"
echo "node $(node --version); $(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')"
python3 -c "import transformers, peft; print('transformers', transformers.__version__, 'peft', peft.__version__)" 2>/dev/null || echo "transformers/peft: not importable"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ "$skip_build" = 0 ]; then
  echo "== 1. build the addon against $(node native/find-libtorch.mjs json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(j.source+(j.cuda?" (CUDA)":" (no CUDA)"))})')"
  bash scripts/setup.sh --build-only
fi
node --import tsx -e "
import('./src/torch/index.ts').then(({ engineInfo }) => {
  const info = engineInfo();
  console.log('addon: libtorch', info.torchVersion, 'CUDA', info.cudaAvailable ? 'yes, ' + info.cudaDevices + ' device(s)' : 'no');
  if ('$device'.startsWith('cuda') && !info.cudaAvailable) { console.error('run.sh: the addon sees no CUDA device'); process.exit(1); }
});"

echo "== 2. op checks on $device"
status=0
node --import tsx bench/gpu/ops_check.ts --device "$device" || status=1

echo "== 3. LoRA SFT step on a Qwen2.5-0.5B shape: lmfactory vs transformers + PEFT ($device)"
node --import tsx bench/gpu/lora_step.ts --device "$device" --out bench/results/gpu_lora_step.json "${step_args[@]}" || status=1

echo "== done (log: $log, results: bench/results/gpu_lora_step.json)"
exit $status
