# kv-prefill + kv-decode as processes, driven by a fake router (tests/test_workers_harness.c).
kv_add_test(test_workers_pair SOURCES test_workers_pair.c test_workers_harness.c LIBS kv_engine kv_wire
            LABELS integration)
target_compile_definitions(test_workers_pair PRIVATE KV_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
add_dependencies(test_workers_pair kv-prefill kv-decode)
