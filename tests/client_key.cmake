# Issue 13: --key FILE on kvctl generate|status|bench and kv-frontend overrides
# KVSERVE_CLIENT_KEY and the kvctl up run directory (tests/test_client_key.sh).
if(TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode AND TARGET kv-frontend)
  add_test(NAME test_client_key
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_client_key.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_client_key PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS integration)
endif()
