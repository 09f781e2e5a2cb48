{
  "targets": [
    {
      "target_name": "tftp_pump",
      "sources": ["pump.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
