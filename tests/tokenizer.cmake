kv_add_test(test_tokenizer SOURCES test_tokenizer.c LIBS kv_tokenizer)

# HF tokenizers vectors (tests/data/tokenizer/make_vectors.py): every synthetic tokenizer, and
# the shared Llama ones (skipped without the shared model dir).
set(_tok_data ${CMAKE_CURRENT_SOURCE_DIR}/data/tokenizer)
kv_add_test(test_tokenizer_vectors_llama2 SOURCES test_tokenizer_vectors.c LIBS kv_tokenizer
            ARGS models:tokenizers/llama2/tokenizer.json ${_tok_data}/llama2.vectors.jsonl)
set_target_properties(test_tokenizer_vectors_llama2 PROPERTIES OUTPUT_NAME test_tokenizer_vectors)
set(_tok_vectors_bin $<TARGET_FILE:test_tokenizer_vectors_llama2>)
function(kv_add_tokenizer_vectors name tokenizer vectors)
  add_test(NAME ${name} COMMAND ${_tok_vectors_bin} ${tokenizer} ${vectors})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endfunction()
kv_add_tokenizer_vectors(test_tokenizer_vectors_llama3 models:tokenizers/llama3/tokenizer.json
                         ${_tok_data}/llama3.vectors.jsonl)
file(GLOB _tok_synthetic LIST_DIRECTORIES true ${_tok_data}/synthetic/*)
foreach(_dir ${_tok_synthetic})
  if(EXISTS ${_dir}/tokenizer.json)
    get_filename_component(_name ${_dir} NAME)
    kv_add_tokenizer_vectors(test_tokenizer_vectors_syn_${_name} ${_dir}/tokenizer.json ${_dir}/vectors.jsonl)
  endif()
endforeach()

# fuzz_tokenizer (tests/fuzz.cmake) also runs the synthetic tokenizers.
foreach(_fuzz fuzz_tokenizer_run fuzz_tokenizer)
  if(TARGET ${_fuzz})
    target_compile_definitions(${_fuzz} PRIVATE KV_TOKENIZER_DATA_DIR="${_tok_data}")
  endif()
endforeach()
