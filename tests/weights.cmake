# Weights in their stored format and converted at load (--weights-dtype): the reference
# quantizers against gguf-py's goldens, round trips, stories260K through every dtype; and
# SmolLM2 served from its GGUF directly against the imported f32 model requantized alike.
kv_add_test(test_weights SOURCES test_weights.c LIBS kv_engine
            ARGS ${CMAKE_CURRENT_SOURCE_DIR}/data/weights/quant_golden.txt)
# quick in sanitizer builds (one case, 8 tokens: three 135M-parameter models run under ASan).
kv_add_test(test_weights_gguf SOURCES test_weights_gguf.c LIBS kv_engine kv_gguf_import kv_json
            ARGS ${CMAKE_CURRENT_SOURCE_DIR}/data/smollm2/greedy.json ${CMAKE_BINARY_DIR}/models
                 $<$<BOOL:${KVSERVE_SANITIZE}>:quick> LABELS model)
set_tests_properties(test_weights_gguf PROPERTIES TIMEOUT 900)
