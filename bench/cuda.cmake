# CUDA benchmarks. Included from bench/CMakeLists.txt; builds only with KVSERVE_CUDA.
#   kv-bench-cuda         kernel micro-benchmark (copy bandwidth, cuBLAS GEMM, attention)
#   kv-bench-engine-cuda  the CUDA engine on a real-shaped model: decode and prefill against
#                         the copy-bandwidth and GEMM floors measured in the same run
if(KVSERVE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  add_executable(kv-bench-cuda ${CMAKE_CURRENT_LIST_DIR}/bench_cuda_kernels.c)
  target_link_libraries(kv-bench-cuda PRIVATE kv_kernels_cuda CUDA::cudart)
  add_executable(kv-bench-engine-cuda ${CMAKE_CURRENT_LIST_DIR}/bench_engine_cuda.c)
  target_link_libraries(kv-bench-engine-cuda PRIVATE kv_engine kv_kernels_cuda CUDA::cudart)
endif()

# kv-bench-transport: cuda-ipc and nccl between two processes through common/transport,
# every block verified, against the copy bandwidth. Its small run is a GPU test too.
if(KVSERVE_CUDA)
  add_executable(kv-bench-transport ${CMAKE_CURRENT_LIST_DIR}/bench_kv_transport.c)
  target_link_libraries(kv-bench-transport PRIVATE kv_transport kv_kernels_cuda CUDA::cudart)
endif()
