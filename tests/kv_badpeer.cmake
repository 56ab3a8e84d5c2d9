# Issue 13 item 2: raw TCP peers (silent, garbage, half a greeting, a 1 TiB frame) on a decode
# worker's KV port, without and with CURVE, stall nothing and are dropped
# (tests/test_kv_badpeer.sh).
if(TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode)
  add_test(NAME test_kv_badpeer
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_kv_badpeer.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_kv_badpeer PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 240 LABELS integration)
endif()
