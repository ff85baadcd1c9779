# PyTorch reference values for tests/torch/{optim,nn}.test.ts: reads one JSON request on stdin,
# runs torch.optim.AdamW / SGD, torch.nn.utils.clip_grad_norm_ or the torch.nn initialisers on it,
# and prints the results as JSON. Run with the system interpreter that has python3-torch:
#   echo '{"mode": "init", ...}' | /usr/bin/python3 tests/reference/torch_reference.py
import json
import sys

import torch


def optim(request):
    params = [torch.tensor(p["values"], dtype=torch.float32).reshape(p["shape"]).requires_grad_() for p in request["params"]]
    groups = []
    for group in request["groups"]:
        hyper = {k: (tuple(v) if k == "betas" else v) for k, v in group.items() if k != "params"}
        groups.append({"params": [params[i] for i in group["params"]], **hyper})
    defaults = {k: (tuple(v) if k == "betas" else v) for k, v in request["defaults"].items()}
    cls = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[request["optimizer"]]
    optimizer = cls(groups, **defaults)
    history = []
    for step in request["steps"]:
        for group, lr in zip(optimizer.param_groups, step.get("lrs") or []):
            group["lr"] = lr
        for param, grad in zip(params, step["grads"]):
            param.grad = None if grad is None else torch.tensor(grad, dtype=torch.float32).reshape(param.shape)
        optimizer.step()
        history.append([p.detach().reshape(-1).tolist() for p in params])
    state = optimizer.state_dict()["state"]
    tensors = {f"{i}.{name}": value.reshape(-1).tolist() for i, s in state.items() for name, value in s.items() if name != "step" and value is not None}
    steps = {str(i): float(s["step"]) for i, s in state.items() if "step" in s}
    return {"history": history, "state": tensors, "steps": steps}


def clip(request):
    params = []
    for grad in request["grads"]:
        param = torch.zeros(len(grad), requires_grad=True)
        param.grad = torch.tensor(grad, dtype=torch.float32)
        params.append(param)
    norm_type = float("inf") if request["norm_type"] == "inf" else request["norm_type"]
    total = torch.nn.utils.clip_grad_norm_(params, request["max_norm"], norm_type)
    return {"total": float(total), "grads": [p.grad.tolist() for p in params]}


def pissa(weight, rank, scaling, niter):
    """peft/tuners/lora/layer.py LoraLayer.pissa_init, on a float32 [out, in] weight."""
    if niter is None:
        V, S, Uh = torch.linalg.svd(weight, full_matrices=False)
        Vr, Sr, Uhr = V[:, :rank], S[:rank].clone(), Uh[:rank]
    else:
        Vr, Sr, Ur = torch.svd_lowrank(weight, rank, niter=niter)
        Uhr = Ur.t()
    Sr /= scaling
    lora_A = torch.diag(torch.sqrt(Sr)) @ Uhr
    lora_B = Vr @ torch.diag(torch.sqrt(Sr))
    return lora_A, lora_B, weight - scaling * lora_B @ lora_A


def svd(request):
    """torch.linalg.svd, torch.svd_lowrank under a seed, and PEFT's PiSSA initialisation."""
    A = torch.tensor(request["values"], dtype=torch.float32).reshape(request["shape"])
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    torch.manual_seed(request["seed"])
    lu, ls, lv = torch.svd_lowrank(A, request["rank"], niter=request["niter"])
    flat = lambda t: t.reshape(-1).tolist()
    out = {"U": flat(U), "S": flat(S), "Vh": flat(Vh), "lowrank": [flat(lu), flat(ls), flat(lv)]}
    full_A, full_B, full_W = pissa(A, request["rank"], request["scaling"], None)
    torch.manual_seed(request["seed"])
    fast_A, fast_B, fast_W = pissa(A, request["rank"], request["scaling"], request["niter"])
    out["pissa"] = [flat(full_A), flat(full_B), flat(full_W)]
    out["pissa_niter"] = [flat(fast_A), flat(fast_B), flat(fast_W)]
    return out


def init(request):
    torch.manual_seed(request["seed"])
    linear = torch.nn.Linear(request["in"], request["out"])
    embedding = torch.nn.Embedding(request["vocab"], request["dim"], padding_idx=request["padding_idx"])
    return {
        "linear_weight": linear.weight.detach().reshape(-1).tolist(),
        "linear_bias": linear.bias.detach().tolist(),
        "embedding_weight": embedding.weight.detach().reshape(-1).tolist(),
    }


if __name__ == "__main__":
    request = json.load(sys.stdin)
    print(json.dumps({"optim": optim, "clip": clip, "init": init, "svd": svd}[request["mode"]](request)))
