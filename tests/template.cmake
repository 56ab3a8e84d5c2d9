# Chat templates (common/template): unit and error tests, and the goldens transformers rendered
# (tests/data/chat_templates; test_template_golden --model DIR also checks a model directory).
kv_add_test(test_template SOURCES test_template.c LIBS kv_template Threads::Threads)
kv_add_test(test_template_golden SOURCES test_template_golden.c LIBS kv_template)
target_compile_definitions(test_template_golden PRIVATE
  KV_TEMPLATE_DATA="${CMAKE_CURRENT_SOURCE_DIR}/data/chat_templates")
add_test(NAME test_template_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_template_cli.sh ${CMAKE_BINARY_DIR}/bin
                 ${CMAKE_CURRENT_SOURCE_DIR}/data/chat_templates)
set_tests_properties(test_template_cli PROPERTIES TIMEOUT 60)
