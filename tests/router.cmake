# kv-router: pure-logic unit tests (plus an in-process router with fake workers over inproc
# sockets), and a process-level bad-input test against the real binary.
if(TARGET kv_router)
  kv_add_test(test_router_units SOURCES test_router_units.c LIBS kv_router)
  kv_add_test(test_router_bad_input SOURCES test_router_bad_input.c LIBS kv_wire)
  target_compile_definitions(test_router_bad_input PRIVATE KV_ROUTER_BIN="$<TARGET_FILE:kv-router>")
  add_dependencies(test_router_bad_input kv-router)
endif()
