# Perplexity (common/eval, kvctl perplexity): llama.cpp's statistics and method, then the CLI
# against numpy references on stories260K and (release builds) SmolLM2 on GPL-3.
kv_add_test(test_perplexity SOURCES test_perplexity.c LIBS kv_eval kv_model)
if(TARGET kvctl)
  add_test(NAME test_perplexity_cli
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_perplexity.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS}
                   ${CMAKE_CURRENT_SOURCE_DIR}/data ${CMAKE_BINARY_DIR}/models $<$<BOOL:${KVSERVE_SANITIZE}>:quick>)
  # Alone, as test_smollm2: it shares that test's SmolLM2 import and runs a 2-thread engine.
  set_tests_properties(test_perplexity_cli PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 RUN_SERIAL TRUE
                       LABELS "integration;model")
endif()
