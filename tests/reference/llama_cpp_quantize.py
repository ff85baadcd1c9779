"""llama.cpp's own tools called through ctypes on the libllama node-llama-cpp ships (no llama.cpp
checkout): `llama_model_quantize` (llama-quantize without an importance matrix) and
`llama_chat_apply_template` (how llama.cpp's chat formats a conversation with a template).

Reads a JSON request on stdin and prints a JSON answer:
  {"op": "quantize", "lib": dir, "input": f32.gguf, "output": out.gguf, "ftype": 15}  -> {"ok": true}
  {"op": "chat", "lib": dir, "template": "...", "messages": [{"role", "content"}], "add_ass": true}
      -> {"text": "..."}  ({"error": code} when llama.cpp does not recognise the template)
"""
import ctypes
import json
import os
import sys


class QuantizeParams(ctypes.Structure):
    # llama.h's llama_model_quantize_params, field for field.
    _fields_ = [
        ("nthread", ctypes.c_int32),
        ("ftype", ctypes.c_int),
        ("output_tensor_type", ctypes.c_int),
        ("token_embedding_type", ctypes.c_int),
        ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool),
        ("only_copy", ctypes.c_bool),
        ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool),
        ("dry_run", ctypes.c_bool),
        ("imatrix", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("tt_overrides", ctypes.c_void_p),
        ("prune_layers", ctypes.c_void_p),
        ("max_buf_size", ctypes.c_size_t),
    ]


class ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


def load(lib_dir):
    for name in sorted(os.listdir(lib_dir)):
        if name.startswith("libggml-base") or name.startswith("libggml.") or name.startswith("libggml-cpu-x64"):
            ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
    llama = next(name for name in os.listdir(lib_dir) if name.startswith("libllama.") and name.endswith(".so"))
    lib = ctypes.CDLL(os.path.join(lib_dir, llama), mode=ctypes.RTLD_GLOBAL)
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_chat_apply_template.argtypes = [ctypes.c_char_p, ctypes.POINTER(ChatMessage), ctypes.c_size_t, ctypes.c_bool, ctypes.c_char_p, ctypes.c_int32]
    lib.llama_chat_apply_template.restype = ctypes.c_int32
    lib.llama_log_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def main():
    req = json.load(sys.stdin)
    lib = load(req["lib"])
    silent = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda level, text, data: None)
    lib.llama_log_set(ctypes.cast(silent, ctypes.c_void_p), None)
    if req["op"] == "quantize":
        params = lib.llama_model_quantize_default_params()
        params.ftype = req["ftype"]
        params.nthread = req.get("nthread", 2)
        status = lib.llama_model_quantize(req["input"].encode(), req["output"].encode(), ctypes.byref(params))
        json.dump({"ok": status == 0, "status": status}, sys.stdout)
    elif req["op"] == "chat":
        messages = (ChatMessage * len(req["messages"]))(*[ChatMessage(m["role"].encode(), m["content"].encode()) for m in req["messages"]])
        size = 1 << 16
        buffer = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(req["template"].encode(), messages, len(req["messages"]), req.get("add_ass", True), buffer, size)
        if n < 0:
            json.dump({"error": n}, sys.stdout)
        else:
            json.dump({"text": buffer.raw[:n].decode()}, sys.stdout)


if __name__ == "__main__":
    main()
