"""Reference greedy decoding in PyTorch: a loop of full forwards (tests/reference/llama_reference.py,
written from transformers' modeling_llama.py) and argmax of the last position, as transformers'
greedy search does without a cache.

Reads {"folder": ..., "input_ids": [[...]], "steps": N} on stdin; prints {"tokens": [[...]]} (N new ids per row).
"""
import json
import sys

import torch

from llama_reference import forward

if __name__ == "__main__":
    req = json.load(sys.stdin)
    rows = []
    with torch.no_grad():
        for prompt in req["input_ids"]:
            ids = list(prompt)
            for _ in range(req["steps"]):
                logits = forward(req["folder"], [ids], None)
                ids.append(int(logits[0, -1].argmax()))
            rows.append(ids[len(prompt):])
    json.dump({"tokens": rows}, sys.stdout)
