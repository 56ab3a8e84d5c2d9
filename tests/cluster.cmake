# Client library and cluster integration tests (real processes on loopback).
if(TARGET kvclient)
  # libkvclient against a fake router (no cluster needed).
  kv_add_test(test_client SOURCES test_client.c LIBS kvclient kv_wire Threads::Threads)
  # Its resume after a router restart, against a fake router (no cluster needed).
  kv_add_test(test_client_resume SOURCES test_client_resume.c LIBS kvclient kv_wire)
  # A plain C program using only kv_client.h and libkvclient.so.
  add_executable(test_client_shared test_client_shared.c)
  target_link_libraries(test_client_shared PRIVATE kvclient_shared)
  add_test(NAME test_client_shared COMMAND test_client_shared)

  kv_add_test(test_cluster SOURCES test_cluster.c test_cluster_fuzz.c test_cluster_logprobs.c test_cluster_impostor.c test_cluster_restart.c kv_fuzz_envelope.c LIBS kvclient kv_engine kv_tokenizer kv_wire LABELS integration)
  target_compile_definitions(test_cluster PRIVATE KV_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
  set_tests_properties(test_cluster PROPERTIES TIMEOUT 180)
  foreach(_bin kv-router kv-prefill kv-decode)
    if(TARGET ${_bin})
      add_dependencies(test_cluster ${_bin})
    endif()
  endforeach()
endif()

if(TARGET kvctl)
  add_test(NAME test_kvctl_cli
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_kvctl_cli.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_kvctl_cli PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS integration)
  add_test(NAME test_kvctl_up
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_kvctl_up.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_kvctl_up PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS integration)
endif()

