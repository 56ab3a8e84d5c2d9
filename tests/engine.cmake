kv_add_test(test_engine_ref SOURCES test_engine_ref.c LIBS kv_engine)
