# SmolLM2-135M-Instruct (the shared GGUF) end to end: import, tokenizer vectors, chat-template
# goldens, greedy ids local and through a cluster, all against tests/data references.
# Skipped without the shared models.
if(TARGET kvctl AND TARGET kv-router)
  add_test(NAME test_smollm2
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_smollm2.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS}
                   ${CMAKE_CURRENT_SOURCE_DIR}/data ${CMAKE_BINARY_DIR}/models $<$<BOOL:${KVSERVE_SANITIZE}>:quick>)
  # Alone: its 2-thread engine runs would starve the timing-sensitive cluster tests beside it.
  set_tests_properties(test_smollm2 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 RUN_SERIAL TRUE LABELS "integration;model")
endif()
