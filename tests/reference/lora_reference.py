"""Reference LoRA / DoRA layer output in PyTorch, written from PEFT's peft/tuners/lora/layer.py
(Linear.forward and DoraLinearLayer.forward, eval mode); no peft needed.

Reads a JSON request on stdin: {"base": model folder, "adapter": adapter folder,
"module": "model.layers.0.self_attn.q_proj", "x": [[...]]} and prints {"y": [...]} (flattened
float32 output [N, out]).
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import load_safetensors  # noqa: E402


def main():
    request = json.load(sys.stdin)
    base = load_safetensors(request["base"] + "/model.safetensors")
    adapter = load_safetensors(request["adapter"] + "/adapter_model.safetensors")
    with open(request["adapter"] + "/adapter_config.json") as f:
        config = json.load(f)
    name = request["module"]
    weight = base[name + ".weight"]
    bias = base.get(name + ".bias")
    lora_a = adapter["base_model.model." + name + ".lora_A.weight"]
    lora_b = adapter["base_model.model." + name + ".lora_B.weight"]
    r, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    x = torch.tensor(request["x"], dtype=torch.float32)

    result = torch.nn.functional.linear(x, weight, bias)
    lora_result = (x @ lora_a.T) @ lora_b.T
    if not config.get("use_dora"):
        y = result + lora_result * scaling
    else:
        magnitude = adapter["base_model.model." + name + ".lora_magnitude_vector"]
        lora_weight = lora_b @ lora_a
        weight_norm = torch.linalg.norm(weight + scaling * lora_weight, dim=1).detach()
        mag_norm_scale = (magnitude / weight_norm).view(1, -1)
        base_result = result - bias if bias is not None else result
        y = result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scaling
    print(json.dumps({"y": y.flatten().tolist()}))


if __name__ == "__main__":
    main()
