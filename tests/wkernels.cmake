# Weight kernels per type x ISA against a dequantize-then-double reference (kernels/cpu/wkernels.h).
kv_add_test(test_wkernels SOURCES test_wkernels.c LIBS kv_kernels_cpu)
