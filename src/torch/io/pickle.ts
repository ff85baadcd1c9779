// PyTorch `.bin` checkpoints (torch.save of a name → tensor dict, as transformers writes
// `pytorch_model.bin`) through libtorch's own pickler (torch::jit::pickle_save / pickle_load),
// plus sharded folders through `pytorch_model.bin.index.json`, as transformers shards them.
import { renameSync, rmSync } from "node:fs";
import { UserError } from "../../errors.ts";
import { native } from "../native.ts";
import type { DType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { requireFile } from "./files.ts";
import { type LoadOptions, type NamedTensors, convert, saveSharded, toPairs } from "./safetensors.ts";
import { readShardIndex, resolveWeights, shardPath } from "./shards.ts";

const FIX_CORRUPT = "download the checkpoint again, or re-save it with torch.save(model.state_dict(), path)";

/** Reads one `.bin` file: every string-keyed tensor in its top-level dict, in file order. */
function readBinFile(path: string): [string, Tensor][] {
  requireFile(path, "PyTorch checkpoint", "check the path, or download the checkpoint again");
  let loaded: { names: string[]; tensors: number[] };
  try {
    loaded = native.pickle_load(path);
  } catch (error) {
    const reason = (error as Error).message.split("\n")[0];
    throw new UserError(`not a readable PyTorch state dict (${reason})`, path, FIX_CORRUPT);
  }
  return loaded.names.map((name, k) => [name, new Tensor(loaded.tensors[k]!)]);
}


/**
 * Yields `[name, tensor]` from a `.bin` file, a `pytorch_model.bin.index.json`, or a folder
 * holding either, one shard in memory at a time (a pickle shard can only load whole). Each
 * yielded tensor is the caller's; tensors of a shard not yet yielded are freed if the caller
 * stops early.
 */
export function* iterateTorchBin(path: string, options: LoadOptions = {}): Generator<[string, Tensor]> {
  const target = resolveWeights(path, "pytorch_model.bin", "PyTorch checkpoint");
  let files: { path: string; names?: Set<string> }[];
  if (target.kind === "index") {
    requireFile(target.path, "shard index", "check the path, or download the checkpoint again");
    const index = readShardIndex(target.path);
    const byFile = new Map<string, Set<string>>();
    for (const [name, file] of index.weightMap) {
      if (!byFile.has(file)) byFile.set(file, new Set());
      byFile.get(file)!.add(name);
    }
    files = [...byFile].map(([file, names]) => ({ path: shardPath(index, file), names }));
  } else {
    files = [{ path: target.path }];
  }
  for (const file of files) {
    const pending = readBinFile(file.path);
    if (file.names) {
      const found = new Set(pending.map(([name]) => name));
      const missing = [...file.names].find((name) => !found.has(name));
      if (missing !== undefined) {
        for (const [, tensor] of pending) tensor.dispose();
        throw new UserError(`the index maps "${missing}" to this shard, which does not hold it`, file.path, FIX_CORRUPT);
      }
    }
    try {
      while (pending.length > 0) {
        const [name, tensor] = pending.shift()!;
        if (file.names && !file.names.has(name)) {
          tensor.dispose();
          continue;
        }
        yield [name, convert(tensor, options)];
      }
    } finally {
      for (const [, tensor] of pending) tensor.dispose();
    }
  }
}

/** Loads a whole `.bin` checkpoint (file, index or folder) into a name → tensor record. */
export function loadTorchBin(path: string, options: LoadOptions = {}): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, tensor] of iterateTorchBin(path, options)) out[name] = tensor;
  return out;
}

/** Writes tensors as a `torch.save`-compatible dict (torch.load reads it), via a temp file renamed into place. */
export function saveTorchBin(path: string, tensors: NamedTensors): void {
  const pairs = toPairs(tensors);
  const temporary = `${path}.tmp`;
  try {
    native.pickle_save(
      pairs.map(([name]) => name),
      pairs.map(([, tensor]) => tensor.id),
      temporary,
    );
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
  renameSync(temporary, path);
}

/**
 * Saves into `folder` as transformers does with `safe_serialization=False`: one
 * `pytorch_model.bin`, or `pytorch_model-0000i-of-0000n.bin` shards plus
 * `pytorch_model.bin.index.json` when they exceed `maxShardSize` (default "5GB").
 */
export function saveTorchBinSharded(
  folder: string,
  tensors: NamedTensors,
  options: { maxShardSize?: number | string; weightsName?: string; dtype?: DType } = {},
): string[] {
  const pairs = toPairs(tensors);
  return saveSharded(folder, pairs, options.weightsName ?? "pytorch_model.bin", options.maxShardSize ?? "5GB", saveTorchBin, options.dtype);
}
