kv_add_test(test_tokenizer SOURCES test_tokenizer.c LIBS kv_tokenizer)
