# Cross-layer KV sharing (cla_share_factor): synthetic CLA models against a numpy reference
# (tests/data/cla), capacity and shipped KV bytes halved at F = 2, greedy through a 1P1D cluster.
kv_add_test(test_cla_config SOURCES test_cla_config.c LIBS kv_model kv_kvcache)
if(TARGET kvctl)
  add_test(NAME test_cla COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cla.sh ${CMAKE_BINARY_DIR}/bin
                                 ${CMAKE_CURRENT_SOURCE_DIR}/data)
  set_tests_properties(test_cla PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS integration)
endif()
