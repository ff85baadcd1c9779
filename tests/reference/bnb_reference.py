"""bitsandbytes' quantization formats in plain PyTorch, written from the published format (no
bitsandbytes needed): csrc/kernels.cu (kQuantizeBlockwise with dQuantizeNF4 / dQuantizeFP4 and the
8-bit dQuantize binary search; 4-bit levels packed two per byte, the first in the high nibble) and
bitsandbytes/functional.py (get_4bit_type, create_dynamic_map, quantize_4bit with
compress_statistics, dequantize_4bit, int8_vectorwise_quant), for tests/model/quantization.test.ts.

Reads {"seed", "cases": [{"shape", "dtype", "quant_type", "double_quant", "blocksize", "zero_rows"}]}
on stdin. For each case it draws a weight (randn * 0.05, some rows zeroed), quantizes it and prints
the raw little-endian bytes (hex) of the input and of every output; plus the dynamic map and
LLM.int8's CB / SCB of the same weight.
"""
import json
import sys

import torch

NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]
FP4 = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]
# dQuantizeNF4's decision tree compares against these midpoints (x > t goes up).
NF4_THRESHOLDS = [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
]
# dQuantizeFP4: magnitude thresholds (already divided by 12) and the bit patterns between them.
FP4_THRESHOLDS = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]
FP4_MAGNITUDE_CODES = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hexof(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes().hex()


def get_4bit_type(name):
    data = torch.tensor(NF4 if name == "nf4" else FP4)
    return data / data.abs().max()


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    assert additional_items == 0
    data.append(0)
    data.append(1.0)
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def blocks_of(flat, blocksize):
    """(absmax [blocks], x * (1/absmax) per element) with the kernel's float32 arithmetic."""
    n = flat.numel()
    nblocks = (n + blocksize - 1) // blocksize
    padded = torch.zeros(nblocks * blocksize, dtype=torch.float32)
    padded[:n] = flat.float()
    valid = torch.arange(nblocks * blocksize) < n
    absmax = torch.where(valid, padded.abs(), torch.tensor(-3.4028234663852886e38)).view(nblocks, blocksize).max(dim=1).values
    reciprocal = torch.tensor(1.0, dtype=torch.float32) / absmax  # inf for an all-zero block
    scaled = (padded.view(nblocks, blocksize) * reciprocal.view(-1, 1)).view(-1)
    return absmax, scaled, n


def quantize_4bit(weight, quant_type, blocksize):
    absmax, scaled, n = blocks_of(weight.reshape(-1), blocksize)
    if n % 2:  # the kernel pads the last pair with a loaded 0
        scaled = torch.cat([scaled[:n], (torch.zeros(1) * (1.0 / absmax[-1]))])
    else:
        scaled = scaled[:n]
    nan = scaled.isnan()
    if quant_type == "nf4":
        q = torch.bucketize(scaled, torch.tensor(NF4_THRESHOLDS, dtype=torch.float32))
    else:
        sign = (scaled < 0).long() * 8
        q = torch.tensor(FP4_MAGNITUDE_CODES)[torch.bucketize(scaled.abs(), torch.tensor(FP4_THRESHOLDS, dtype=torch.float32))] + sign
    q = torch.where(nan, torch.zeros_like(q), q).to(torch.uint8)  # NaN (0 · inf) falls through every comparison
    return (q[0::2] << 4) | q[1::2], absmax


def quantize_dynamic(values, code):
    """dQuantize<0>: the kernel's binary search over the sorted code, then the nearer neighbour."""
    x = values
    pivot = torch.full_like(x, 127, dtype=torch.long)
    upper_pivot = torch.full_like(pivot, 255)
    lower_pivot = torch.zeros_like(pivot)
    lower = torch.full_like(x, -1.0)
    upper = torch.full_like(x, 1.0)
    val = code[pivot]
    step = 64
    while step > 0:
        up = x > val
        lower_pivot = torch.where(up, pivot, lower_pivot)
        lower = torch.where(up, val, lower)
        upper_pivot = torch.where(up, upper_pivot, pivot)
        upper = torch.where(up, upper, val)
        pivot = torch.where(up, pivot + step, pivot - step)
        val = code[pivot]
        step //= 2
    upper = torch.where(upper_pivot == 255, code[255], upper)
    lower = torch.where(lower_pivot == 0, code[0], lower)
    above = torch.where(x > (upper + val) * 0.5, upper_pivot, pivot)
    below = torch.where(x < (lower + val) * 0.5, lower_pivot, pivot)
    return torch.where(x > val, above, below).to(torch.uint8)


def quantize_blockwise(values, code, blocksize):
    absmax, scaled, n = blocks_of(values, blocksize)
    return quantize_dynamic(scaled[:n], code), absmax


def dequantize_4bit(packed, absmax, code, blocksize, n, dtype):
    q = torch.stack([packed >> 4, packed & 15], dim=1).view(-1)[:n].long()
    values = code[q]
    scale = absmax.repeat_interleave(blocksize)[:n]
    return (values * scale).to(dtype)


def main():
    request = json.load(sys.stdin)
    torch.manual_seed(request["seed"])
    dynamic = create_dynamic_map()
    out = {"dynamic_map": hexof(dynamic), "nf4": hexof(get_4bit_type("nf4")), "fp4": hexof(get_4bit_type("fp4")), "cases": []}
    for case in request["cases"]:
        dtype = DTYPES[case["dtype"]]
        weight = (torch.randn(case["shape"]) * 0.05).to(dtype)
        for row in case.get("zero_rows", []):
            weight[row] = 0
        blocksize = case["blocksize"]
        n = weight.numel()
        packed, absmax = quantize_4bit(weight, case["quant_type"], blocksize)
        code = get_4bit_type(case["quant_type"])
        result = {"input": hexof(weight), "packed": hexof(packed), "absmax": hexof(absmax)}
        used_absmax = absmax
        if case["double_quant"]:
            offset = absmax.mean()
            q2, absmax2 = quantize_blockwise(absmax - offset, dynamic, 256)
            result.update({"offset": hexof(offset), "nested_levels": hexof(q2), "nested_absmax": hexof(absmax2)})
            used_absmax = dynamic[q2.long()] * absmax2.repeat_interleave(256)[: absmax.numel()] + offset
            result["nested_dequantized"] = hexof(used_absmax)
        result["dequantized"] = hexof(dequantize_4bit(packed, used_absmax, code, blocksize, n, dtype))
        if weight.dim() == 2:
            # int8_vectorwise_quant (threshold 0): row absmax, round(A * (127 / absmax)).
            row_stats = weight.abs().max(dim=1).values.float()
            cb = torch.round(weight * (127.0 / row_stats.unsqueeze(-1)))
            cb = torch.where(row_stats.unsqueeze(-1) == 0, torch.zeros_like(cb), cb).to(torch.int8)
            result.update({"cb": hexof(cb), "scb": hexof(row_stats)})
        out["cases"].append(result)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
