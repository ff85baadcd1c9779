"""GPTQ reference in PyTorch, written from auto_gptq's gptq.py (GPTQ.fasterquant, Quantizer with
sym=True) and qlinear's QuantLinear.pack (numpy loops), for comparison with lmfactory's
src/export/gptq and src/export/gptq/pack.ts.

Reads a JSON request on stdin:
  {"op": "pack", "levels": [[out][in] ints], "zeros": [[out][groups]], "bits": b, "group_size": g}
      -> {"qweight": [[...]], "qzeros": [[...]]}  (int32, as QuantLinear.pack writes them)
  {"op": "gptq", "weight": [[out][in]], "inputs": [[[T][in]] per sample], "bits": b, "group_size": g,
   "damp": 0.1, "blocksize": 128, "fp16_scale": true}
      -> {"levels": [[...]], "hinv": [[...]]}
"""
import json
import sys

import numpy as np
import torch

from gptq_pack_reference import pack_rows  # QuantLinear.pack's word layout, shared with the checkpoint tests


def pack(levels, zeros, bits):
    """QuantLinear.pack: levels [out][in] and zeros [out][groups] -> qweight, qzeros (zero - 1)."""
    intweight = np.array(levels, dtype=np.uint32).T.copy()  # [in, out]
    qweight = pack_rows(intweight, bits)
    z = (np.array(zeros, dtype=np.int64).T - 1).astype(np.uint32) & ((1 << bits) - 1)  # [groups, out]
    # qzeros packs along the output dimension: pack the transpose, transpose back.
    qzeros = pack_rows(z.T.copy(), bits).T.copy()
    return qweight.astype(np.int32).tolist(), qzeros.astype(np.int32).tolist()


def find_params(x, maxq, fp16_scale):
    zero_t = torch.zeros(x.shape[0])
    xmin = torch.minimum(x.min(1)[0], zero_t)
    xmax = torch.maximum(x.max(1)[0], zero_t)
    xmax = torch.maximum(torch.abs(xmin), xmax)
    neg = xmin < 0
    xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1
    xmax[both] = +1
    scale = (xmax - xmin) / maxq
    if fp16_scale:
        scale = scale.half().float()
    zero = torch.full_like(scale, (maxq + 1) / 2)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def gptq(req):
    W = torch.tensor(req["weight"], dtype=torch.float32)
    rows, columns = W.shape
    bits, group_size, blocksize = req["bits"], req["group_size"], req.get("blocksize", 128)
    maxq = 2**bits - 1
    H = torch.zeros(columns, columns)
    nsamples = 0
    for sample in req["inputs"]:
        inp = torch.tensor(sample, dtype=torch.float32).t()
        H *= nsamples / (nsamples + 1)
        nsamples += 1
        inp = (2 / nsamples) ** 0.5 * inp
        H += inp.matmul(inp.t())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = req.get("damp", 0.1) * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H.double())
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True).float()
    levels = torch.zeros_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if (i1 + i) % group_size == 0:
                scale, zero = find_params(W[:, (i1 + i) : (i1 + i + group_size)], maxq, req.get("fp16_scale", True))
            q_int = torch.clamp(torch.round(w.unsqueeze(1) / scale) + zero, 0, maxq)
            q = (scale * (q_int - zero)).flatten()
            levels[:, i1 + i] = q_int.flatten()
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return {"levels": levels.int().tolist(), "hinv": Hinv.tolist()}


if __name__ == "__main__":
    req = json.load(sys.stdin)
    if req["op"] == "pack":
        qweight, qzeros = pack(req["levels"], req["zeros"], req["bits"])
        json.dump({"qweight": qweight, "qzeros": qzeros}, sys.stdout)
    else:
        with torch.no_grad():
            json.dump(gptq(req), sys.stdout)
