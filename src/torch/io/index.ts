// Checkpoint I/O: safetensors (single and sharded) and PyTorch `.bin` (torch.save pickles).
export {
  openSafetensors,
  loadSafetensors,
  saveSafetensors,
  saveSafetensorsSharded,
  SafetensorsFile,
  ShardedSafetensors,
  type TensorReader,
  type TensorInfo,
  type LoadOptions,
  type NamedTensors,
  type ShardedSaveOptions,
} from "./safetensors.ts";
export { loadTorchBin, iterateTorchBin, saveTorchBin, saveTorchBinSharded } from "./pickle.ts";
export { parseShardSize, shardFileName } from "./shards.ts";
