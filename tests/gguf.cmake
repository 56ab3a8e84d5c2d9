# GGUF reader, kv_type dequantization, the GGUF -> HF importer and `kvctl model import`.
if(TARGET kv_gguf_import AND TARGET kv_tokenizer)
  kv_add_test(test_gguf SOURCES test_gguf.c LIBS kv_gguf_import kv_model kv_tokenizer kv_json)
  target_compile_definitions(test_gguf PRIVATE KV_GGUF_DATA="${CMAKE_CURRENT_SOURCE_DIR}/data/gguf")
  if(TARGET kvctl)
    add_test(NAME test_model_import COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_model_import.sh
             ${CMAKE_BINARY_DIR}/bin ${CMAKE_CURRENT_SOURCE_DIR}/data/gguf)
    set_tests_properties(test_model_import PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
  endif()
endif()
