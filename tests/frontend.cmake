# kv-frontend (the OpenAI-compatible HTTP front end): its pure parts in-process, and the
# whole service on loopback driven by the official openai Python client.
if(TARGET kv_frontend_core)
  kv_add_test(test_frontend_units SOURCES test_frontend_units.c LIBS kv_frontend_core)
endif()
if(TARGET kv-frontend AND TARGET kvctl)
  add_test(NAME test_frontend
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_frontend.sh ${CMAKE_BINARY_DIR}/bin ${KV_DEFAULT_MODELS}
                   ${CMAKE_BINARY_DIR})
  set_tests_properties(test_frontend PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS integration)
endif()
