# Synthetic model writer tests (the target exists once common/model includes synth.cmake).
if(TARGET kv_model_synth AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_synth.c)
  kv_add_test(test_synth SOURCES test_synth.c LIBS kv_model_synth kv_json)
endif()
