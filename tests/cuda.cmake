# GPU tests: the CUDA kernels against their CPU twins. Label `gpu`; they exit 77 (skipped)
# on a machine without a GPU.
if(KVSERVE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  kv_add_test(test_cuda_kernels SOURCES test_cuda_kernels.c
              LIBS kv_kernels_cuda kv_kernels_cpu CUDA::cudart LABELS gpu)
  # Alone on the machine: its CPU references use every core, its pools several GiB of GPU.
  set_tests_properties(test_cuda_kernels PROPERTIES RUN_SERIAL ON)
endif()
