{
  # Built by scripts/build-native.sh (node-gyp runs in native/, intermediates land in
  # native/build/, the script installs the addon as build/Release/scope_tracker.node).
  "targets": [
    {
      "target_name": "scope_tracker",
      "sources": [
        "src/addon.cc",
        "src/batch_pipe.cc",
        "src/attach_plan.c",
        "src/backstop_setup.c",
        "src/bpf_session.cc",
        "src/conntrack_netlink.cc",
        "src/conntrack_wrap.cc",
        "src/fd_walk.cc",
        "src/libbpf_log.cc",
        "src/snapshot_session.cc",
        "src/snapshot_wrap.cc",
        "src/tracker_wrap.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz", "-lpthread"]
    }
  ]
}
