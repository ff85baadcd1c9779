"""llama.cpp's own quantizer (llama-quantize without an importance matrix) through ctypes, on the
libllama that node-llama-cpp ships: makes the Q4_0 GGUF bench/qlora.ts decodes with llama.cpp.

Reads {"lib": dir, "input": f16.gguf, "output": out.gguf, "ftype": n, "nthread": n} on stdin and
prints {"ok": bool, "status": n}.
"""
import ctypes
import json
import os
import sys


class QuantizeParams(ctypes.Structure):
    # llama.h's llama_model_quantize_params, field for field (the libllama node-llama-cpp 3.21.1 ships).
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


def main():
    request = json.load(sys.stdin)
    lib_dir = request["lib"]
    # libllama needs ggml's libraries loaded first, globally.
    for name in sorted(os.listdir(lib_dir)):
        if name.startswith(("libggml-base", "libggml.", "libggml-cpu-x64")):
            ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
    llama = next(name for name in os.listdir(lib_dir) if name.startswith("libllama.") and name.endswith(".so"))
    lib = ctypes.CDLL(os.path.join(lib_dir, llama), mode=ctypes.RTLD_GLOBAL)
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    params = lib.llama_model_quantize_default_params()
    params.ftype = request["ftype"]
    params.nthread = request.get("nthread", 2)
    status = lib.llama_model_quantize(request["input"].encode(), request["output"].encode(), ctypes.byref(params))
    print(json.dumps({"ok": status == 0, "status": status}))


if __name__ == "__main__":
    main()
