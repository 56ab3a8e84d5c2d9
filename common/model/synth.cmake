# Synthetic model writer (kvctl model synth): streaming safetensors writer, dtype converters,
# the real-model shape table, and the byte-level BPE tokenizer.json generator.
# Included by common/model/CMakeLists.txt.
add_library(kv_model_synth STATIC
  ${CMAKE_CURRENT_LIST_DIR}/dtype_convert.c
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_write.c
  ${CMAKE_CURRENT_LIST_DIR}/model_shapes.c
  ${CMAKE_CURRENT_LIST_DIR}/synth_weights.c
  ${CMAKE_CURRENT_LIST_DIR}/synth_tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/synth_model.c)
target_include_directories(kv_model_synth PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kv_model_synth PUBLIC kv_json kv_base m)
