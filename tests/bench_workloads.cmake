# kvctl bench's workloads (random, shared-prefix, multi-turn) against a local cluster.
if(TARGET kvctl)
  add_test(NAME test_bench_workloads
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_workloads.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_bench_workloads PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS integration)
endif()
