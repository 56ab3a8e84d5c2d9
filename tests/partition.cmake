# Issue 13 acceptance, "partitions, not just crashes": the router, a prefill and two decode
# workers as separate hosts in network namespaces joined by veth pairs; links cut, healed and
# shaped (tests/test_partition.sh; test_partition_client runs the streams and checks their
# token indices). Skipped (77) without the rights to make namespaces or without the models.
if(TARGET kvclient AND TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode)
  add_executable(test_partition_client test_partition_client.c)
  target_link_libraries(test_partition_client PRIVATE kvclient)
  add_test(NAME test_partition
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_partition.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_partition PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 150 LABELS integration)
endif()
