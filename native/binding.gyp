{
  "targets": [
    {
      "target_name": "lmfactory",
      "sources": ["src/addon.cc", "src/runtime.cc", "src/autograd.cc", "src/serialization.cc", "src/distributed.cc", "src/quant.cc", "src/autocast.cc", "src/rows_linear.cc", "generated/ops.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node find-libtorch.mjs include)"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL", "<!@(node find-libtorch.mjs defines)"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "libraries": ["<!@(node find-libtorch.mjs libs)"]
    }
  ]
}
