# Quantized KV: the kernels (kernels/cpu/kv_quant.h) against the formula and against
# attention over dequantized values; the block layout (common/kvcache/kv_layout.h).
kv_add_test(test_kv_quant SOURCES test_kv_quant.c LIBS kv_kernels_cpu)
kv_add_test(test_kv_layout SOURCES test_kv_layout.c LIBS kv_kvcache kv_kernels_cpu)
