# Quantized KV: the kernels (kernels/cpu/kv_quant.h) against the formula and against
# attention over dequantized values; the block layout (common/kvcache/kv_layout.h).
kv_add_test(test_kv_quant SOURCES test_kv_quant.c LIBS kv_kernels_cpu)
kv_add_test(test_kv_layout SOURCES test_kv_layout.c LIBS kv_kvcache kv_kernels_cpu)
# The CPU engine with int8/int4/int2 KV (common/engine/engine_kvq.h) on stories260K.
kv_add_test(test_engine_kvq SOURCES test_engine_kvq.c LIBS kv_engine)
# Greedy output through a 1P1D cluster with int8 / int2 KV equals --local with the same KV.
if(TARGET kvctl AND TARGET kv-router AND TARGET kv-prefill AND TARGET kv-decode)
  add_test(NAME test_kv_quant_cluster
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_kv_quant_cluster.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS})
  set_tests_properties(test_kv_quant_cluster PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS integration)
endif()
# kvctl perplexity with int8/int4/int2 KV on stories260K against a numpy model of the scheme.
if(TARGET kvctl)
  add_test(NAME test_perplexity_kvq
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_perplexity_kvq.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS}
                   ${CMAKE_CURRENT_SOURCE_DIR}/data)
  set_tests_properties(test_perplexity_kvq PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "integration;model")
endif()
