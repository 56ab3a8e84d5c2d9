# GGUF: the reader (kv_gguf) and the importer to a HuggingFace directory (kv_gguf_import,
# kvctl model import). Included by common/model/CMakeLists.txt, after synth.cmake (the
# importer writes through its safetensors writer and dtype converters).
add_library(kv_gguf STATIC ${CMAKE_CURRENT_LIST_DIR}/gguf.c)
target_include_directories(kv_gguf PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kv_gguf PUBLIC kv_base)

if(TARGET kv_model_synth)
  add_library(kv_gguf_import STATIC
    ${CMAKE_CURRENT_LIST_DIR}/gguf_import.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_hfconfig.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_tokenizer.c
    ${CMAKE_CURRENT_LIST_DIR}/gguf_merges.c)
  target_link_libraries(kv_gguf_import PUBLIC kv_gguf kv_model_synth kv_json kv_base m)
endif()
