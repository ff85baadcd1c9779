# Independent reference for tests/torch/io.test.ts: PyTorch's own torch.save / torch.load, and a
# safetensors reader built from the format spec (struct + json + torch.frombuffer), or the
# `safetensors` package itself when it is installed. Prints tensors as JSON
# {name: {"dtype", "shape", "hex"}} with "hex" the raw little-endian bytes.
# Usage: torch_io.py write-bin PATH | read-bin PATH | read-safetensors PATH | write-safetensors PATH
import json
import struct
import sys

import torch

ST_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {
    torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.float64: "float64", torch.int64: "int64", torch.int32: "int32", torch.int16: "int16",
    torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool",
}


def raw_bytes(t):
    t = t.detach().contiguous()
    # numpy has no bfloat16; the same 16 bits viewed as int16 give the same bytes.
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def describe(state):
    return {name: {"dtype": NAMES[t.dtype], "shape": list(t.shape), "hex": raw_bytes(t).hex()} for name, t in state.items()}


def sample_state():
    """One tensor per dtype, with values that catch byte-order and rounding mistakes."""
    floats = torch.tensor([[0.0, -0.0, 1.5, -2.25], [65504.0, 1e-3, float("inf"), float("-inf")], [3.140625, -7.0, 0.1, 1e30]], dtype=torch.float64)
    ints = torch.tensor([[0, 1, -1, 127], [-128, 100, -100, 42]], dtype=torch.int64)
    state = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        state["model.float." + NAMES[dtype]] = floats.to(dtype)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8):
        state["model.int." + NAMES[dtype]] = ints.to(dtype)
    state["model.int.int64_big"] = torch.tensor([2**62 + 12345, -(2**62) - 7], dtype=torch.int64)
    state["model.uint8"] = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    state["model.bool"] = torch.tensor([[True, False], [False, True]])
    state["model.scalar"] = torch.tensor(2.5)
    return state


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except ImportError:
        pass
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    state = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = ST_DTYPES[info["dtype"]]
        if end == begin:
            state[name] = torch.empty(info["shape"], dtype=dtype)
        else:
            state[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(info["shape"])
    return state


def main():
    command, path = sys.argv[1], sys.argv[2]
    if command == "write-bin":
        state = sample_state()
        torch.save(state, path)
    elif command == "read-bin":
        state = torch.load(path)
    elif command == "read-safetensors":
        state = read_safetensors(path)
    elif command == "write-safetensors":
        from safetensors.torch import save_file
        state = sample_state()
        save_file(state, path, metadata={"format": "pt"})
    else:
        raise SystemExit("unknown command " + command)
    print(json.dumps(describe(state)))


if __name__ == "__main__":
    main()
