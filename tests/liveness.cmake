# Issue 13 item 4: client liveness (ClientHeartbeat, kv-router --client-timeout) with real
# processes (tests/test_liveness.sh; test_liveness_client is the slow / killed client).
if(TARGET kvclient AND TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode)
  add_executable(test_liveness_client test_liveness_client.c)
  target_link_libraries(test_liveness_client PRIVATE kvclient)
  add_test(NAME test_liveness
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_liveness.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_liveness PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS integration)
endif()
if(TARGET kv_router)
  kv_add_test(test_router_liveness SOURCES test_router_liveness.c LIBS kv_router)
endif()
