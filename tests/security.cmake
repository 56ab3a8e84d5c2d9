# Issue 13: CURVE keys and allowlists (unit), and every socket's authentication with real
# processes (tests/test_security.sh, with test_security_probe as the impostor).
kv_add_test(test_security_keys SOURCES test_security_keys.c LIBS kv_curve)
add_executable(test_security_probe test_security_probe.c)
target_link_libraries(test_security_probe PRIVATE kv_curve kv_wire)
if(TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode)
  add_test(NAME test_security
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_security.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_security PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 240 LABELS integration)
endif()
