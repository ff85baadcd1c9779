"""transformers + PEFT side of bench/gpu/lora_step.ts: the same LoRA SFT step as LLaMA-Factory sets it
up (model loaded in bf16 with sdpa attention, PEFT LoRA on every linear layer with float32 adapter
weights, gradient checkpointing with use_reentrant=True, bf16 autocast as HF's Trainer with bf16=True,
AdamW, clip_grad_norm_), starting from lmfactory's LoRA initialisation, on the same batches.

stdin: {"folder", "device", "warmup", "targets", "lr", "weight_decay", "max_grad_norm", "lora_rank", "lora_alpha"}
stdout: {"losses", "step_s", "timed_s", "timed_steps", "peak_rss_mib", "torch_max_allocated_mib", "torch_max_reserved_mib"}
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    req = json.load(sys.stdin)
    device = req["device"]
    on_gpu = device.startswith("cuda")
    folder = req["folder"]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    config = LoraConfig(r=req["lora_rank"], lora_alpha=req["lora_alpha"], lora_dropout=0.0, target_modules=req["targets"], bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    # LLaMA-Factory: trainable parameters in float32.
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    # lmfactory's initialisation, PEFT's names (base_model.model.<name>, adapter "default").
    init = load_file(f"{folder}/lora_init.safetensors")
    state = {f"base_model.model.{name}".replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight"): t for name, t in init.items()}
    own = dict(model.named_parameters())
    missing = [name for name in state if name not in own]
    assert not missing, missing[:3]
    with torch.no_grad():
        for name, t in state.items():
            own[name].copy_(t.to(own[name].device))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(state), (len(trainable), len(state))
    optimizer = torch.optim.AdamW(trainable, lr=req["lr"], weight_decay=req["weight_decay"])
    with open(f"{folder}/batches.json") as f:
        batches = json.load(f)
    model.train()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses, step_s = [], []
    timed_from = None
    for index, batch in enumerate(batches):
        if index == req["warmup"]:
            if on_gpu:
                torch.cuda.synchronize()
            timed_from = time.perf_counter()
        started = time.perf_counter()
        ids = torch.tensor(batch, device=device)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, req["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_s.append(time.perf_counter() - started)
    if on_gpu:
        torch.cuda.synchronize()
    timed = time.perf_counter() - timed_from
    out = {"losses": losses, "step_s": step_s, "timed_s": timed, "timed_steps": len(batches) - req["warmup"], "peak_rss_mib": peak_rss_mib()}
    if on_gpu:
        out["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
