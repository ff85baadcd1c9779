"""GPTQ checkpoint tensors as AutoGPTQ writes them, for tests/model/gptq_checkpoint.test.ts: a
round-to-nearest asymmetric quantization per (output row, group) with float16 scales, then
auto_gptq's QuantLinear.pack (qlinear_cuda_old.py: its numpy loops, 3-bit levels straddling words;
qzeros hold zero - 1) for 2, 3, 4 and 8 bits, with g_idx either i // group_size or an act-order
permutation. Prints the four tensors and the dequantized weight scales[g] * (q - zero).

Reads [{"out", "in", "bits", "group_size", "act_order", "seed"}] on stdin; prints a list of
{"qweight": [...int32], "qzeros": [...int32], "scales": [...float16 as float], "g_idx": [...],
"dequantized_hex": float32 bytes} (tensors flattened row-major).
"""
import json
import sys

import numpy as np
import torch


def pack_rows(intweight, bits):
    """QuantLinear.pack's loop over rows of intweight [rows, cols] (uint32) -> [rows * bits / 32, cols]."""
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = 0
    row = 0
    while row < qweight.shape[0]:
        if bits in [2, 4, 8]:
            for j in range(i, i + (32 // bits)):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        elif bits == 3:
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight


def layer(spec):
    out_f, in_f, bits, group_size = spec["out"], spec["in"], spec["bits"], spec["group_size"]
    gen = torch.Generator().manual_seed(spec["seed"])
    weight = torch.randn(out_f, in_f, generator=gen) * 0.1
    groups = in_f // group_size
    if spec["act_order"]:
        perm = torch.randperm(in_f, generator=gen)
        g_idx = torch.empty(in_f, dtype=torch.int32)
        g_idx[perm] = (torch.arange(in_f) // group_size).to(torch.int32)
    else:
        g_idx = (torch.arange(in_f) // group_size).to(torch.int32)
    maxq = 2**bits - 1
    scales = torch.zeros(groups, out_f, dtype=torch.float16)
    zeros = torch.zeros(groups, out_f, dtype=torch.int64)
    for g in range(groups):
        cols = weight[:, g_idx == g]
        xmin = torch.minimum(cols.min(dim=1).values, torch.zeros(out_f))
        xmax = torch.maximum(cols.max(dim=1).values, torch.zeros(out_f))
        scale = ((xmax - xmin) / maxq).half()
        scales[g] = scale
        # AutoGPTQ's format stores zero - 1 and reads it back + 1, so a zero of 0 cannot be written.
        zeros[g] = torch.clamp(torch.round(-xmin / scale.float()), 1, maxq).long()
    s = scales.float()[g_idx.long()].T  # [out, in]
    z = zeros[g_idx.long()].T
    q = torch.clamp(torch.round(weight / s) + z, 0, maxq).long()  # [out, in]
    dequantized = s * (q - z).float()
    qweight = pack_rows(q.T.numpy().astype(np.uint32), bits).view(np.int32)
    # qzeros: zero - 1, packed along the output dimension (pack the transpose, transpose back).
    zeros_minus_one = ((zeros - 1) & maxq).numpy().astype(np.uint32)  # [groups, out]
    qzeros = pack_rows(zeros_minus_one.T.copy(), bits).T.copy().view(np.int32)
    return {
        "qweight": qweight.reshape(-1).tolist(),
        "qzeros": qzeros.reshape(-1).tolist(),
        "scales": scales.float().reshape(-1).tolist(),
        "g_idx": g_idx.tolist(),
        "dequantized_hex": dequantized.contiguous().numpy().tobytes().hex(),
    }


def main():
    print(json.dumps([layer(spec) for spec in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
