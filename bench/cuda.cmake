# kv-bench-cuda: CUDA kernel micro-benchmark (copy bandwidth, cuBLAS GEMM, prefill and
# decode attention). Included from bench/CMakeLists.txt; builds only with KVSERVE_CUDA.
if(KVSERVE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  add_executable(kv-bench-cuda ${CMAKE_CURRENT_LIST_DIR}/bench_cuda_kernels.c)
  target_link_libraries(kv-bench-cuda PRIVATE kv_kernels_cuda CUDA::cudart)
endif()
