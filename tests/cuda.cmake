# GPU tests: the CUDA kernels against their CPU twins. Label `gpu`; they exit 77 (skipped)
# on a machine without a GPU.
if(KVSERVE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  kv_add_test(test_cuda_kernels SOURCES test_cuda_kernels.c
              LIBS kv_kernels_cuda kv_kernels_cpu CUDA::cudart LABELS gpu)
  # Alone on the machine: its CPU references use every core, its pools several GiB of GPU.
  set_tests_properties(test_cuda_kernels PROPERTIES RUN_SERIAL ON)
  # The block-format decode GEMV (q8_0/q4_0/q4_1) against dequantize-then-f32 and its CPU twin.
  kv_add_test(test_cuda_wgemv SOURCES test_cuda_wgemv.c LIBS kv_kernels_cuda kv_kernels_cpu CUDA::cudart LABELS gpu)
  # The quantized-KV kernels (seal a block, decode attention over codes + f32 window)
  # against kq_quantize_block / kq_attend_one on kv_layout blocks.
  kv_add_test(test_cuda_kv_quant SOURCES test_cuda_kv_quant.c
              LIBS kv_kernels_cuda kv_kernels_cpu kv_kvcache CUDA::cudart LABELS gpu)
  # The CUDA engine against the shared references (stories260K) and against the CPU engine
  # on synthetic models with real head dims (written to a temporary directory).
  kv_add_test(test_engine_cuda SOURCES test_engine_cuda.c test_engine_cuda_synth.c
              LIBS kv_engine kv_model_synth LABELS gpu)
  set_tests_properties(test_engine_cuda PROPERTIES RUN_SERIAL ON TIMEOUT 600)
  # The GPU transports between two processes (cuda-ipc; nccl too with two GPUs).
  add_test(NAME test_kv_transport_gpu COMMAND kv-bench-transport --blocks 64 --block-bytes 1048576 --chunk 7 --reps 2)
  set_tests_properties(test_kv_transport_gpu PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 300 RUN_SERIAL ON)
endif()

# The engine test again on the CPU: the CUDA engine's code compiled against
# tests/cuda_mock.c (a checking stand-in for the CUDA runtime and kernels/cuda), so CI
# covers engine_cuda*.c without a GPU. Needs only the CUDA headers. Run twice: with CUDA
# graphs captured and replayed, and with every capture failing (the fallback path).
if(KVSERVE_CUDA)
  set(_kv_engine_dir ${CMAKE_SOURCE_DIR}/common/engine)
  add_library(kv_engine_cudamock STATIC
    ${_kv_engine_dir}/engine.c ${_kv_engine_dir}/engine_cpu.c ${_kv_engine_dir}/engine_kvq.c
    ${_kv_engine_dir}/engine_kv_flags.c ${_kv_engine_dir}/sampler.c ${_kv_engine_dir}/generate.c
    ${_kv_engine_dir}/engine_cuda.c ${_kv_engine_dir}/engine_cuda_forward.c ${_kv_engine_dir}/engine_cuda_graph.c
    ${_kv_engine_dir}/engine_cuda_gemv.c ${CMAKE_CURRENT_SOURCE_DIR}/cuda_mock.c
    ${CMAKE_SOURCE_DIR}/kernels/cuda/cuda_kv_quant_check.c)
  target_include_directories(kv_engine_cudamock PUBLIC ${_kv_engine_dir} ${CMAKE_SOURCE_DIR}/kernels/cuda)
  target_include_directories(kv_engine_cudamock SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(kv_engine_cudamock PRIVATE KV_HAVE_CUDA_ENGINE)
  target_link_libraries(kv_engine_cudamock PUBLIC kv_kvcache kv_model kv_kernels_cpu kv_base)
  # The KV transports' GPU side on the same mock (its IPC and a dlopened NCCL stand-in).
  set(_kv_t ${CMAKE_SOURCE_DIR}/common/transport)
  add_library(kv_transport_cudamock STATIC ${_kv_t}/kv_transport.c ${_kv_t}/kv_gpu_xfer.c ${_kv_t}/kv_nccl.c)
  target_include_directories(kv_transport_cudamock PUBLIC ${_kv_t})
  target_include_directories(kv_transport_cudamock SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(kv_transport_cudamock PUBLIC kv_engine_cudamock kv_base ${CMAKE_DL_LIBS})
  kv_add_test(test_engine_cuda_mock SOURCES test_engine_cuda.c test_engine_cuda_synth.c
              LIBS kv_engine_cudamock kv_model_synth)
  # The decode projections: on the own GEMV wherever it fits here, on cuBLAS's there (the
  # GPU run measures which and may mix them).
  set_tests_properties(test_engine_cuda_mock PROPERTIES ENVIRONMENT KVSERVE_GEMV=own)
  add_test(NAME test_engine_cuda_mock_nographs COMMAND test_engine_cuda_mock)
  set_tests_properties(test_engine_cuda_mock_nographs PROPERTIES ENVIRONMENT "KV_CUDA_MOCK_CAPTURE_FAIL=1;KVSERVE_GEMV=cublas"
                       SKIP_RETURN_CODE 77 TIMEOUT 300)
  # test_cuda_kv_quant on the mock, whose stand-ins are the CPU twins: the test itself, the
  # launchers' contract (device ranges, tables, workspace) and their refusals, in CI.
  kv_add_test(test_cuda_kv_quant_mock SOURCES test_cuda_kv_quant.c LIBS kv_engine_cudamock)
endif()

# kv-bench-engine-cuda's set-up and arithmetic on the mock (a tiny synthetic model, small
# floors): the benchmark is then known to run before a GPU session is spent on it.
if(TARGET kv_engine_cudamock AND TARGET kv-synth)
  add_executable(kv-bench-engine-cuda-mock ${CMAKE_SOURCE_DIR}/bench/bench_engine_cuda.c)
  target_link_libraries(kv-bench-engine-cuda-mock PRIVATE kv_engine_cudamock)
  add_test(NAME test_bench_engine_cuda_mock
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_cuda_mock.sh ${CMAKE_BINARY_DIR}/bin)
  set_tests_properties(test_bench_engine_cuda_mock PROPERTIES TIMEOUT 300)
endif()

# libkv_nccl_mock.so: a stand-in for libnccl.so.2 (tests/nccl_mock.c) that the workers
# dlopen through KVSERVE_NCCL_LIB; plain C over Unix sockets, no CUDA (only nccl.h).
# test_mock_ipc runs it and cuda_mock.c's IPC between two processes.
if(TARGET kv_engine_cudamock)
  find_package(CUDAToolkit REQUIRED)
  add_library(kv_nccl_mock SHARED ${CMAKE_CURRENT_SOURCE_DIR}/nccl_mock.c)
  target_include_directories(kv_nccl_mock SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(kv_nccl_mock PRIVATE Threads::Threads)
  kv_add_test(test_mock_ipc SOURCES test_mock_ipc.c LIBS kv_engine_cudamock dl)
  target_compile_definitions(test_mock_ipc PRIVATE KV_NCCL_MOCK_LIB="$<TARGET_FILE:kv_nccl_mock>")
  add_dependencies(test_mock_ipc kv_nccl_mock)
  set_tests_properties(test_mock_ipc PROPERTIES TIMEOUT 120)
endif()

# kv-bench-transport on the mock: two processes, two mock GPUs, cuda-ipc through memfd
# "device" memory and nccl through libkv_nccl_mock.so (above).
if(TARGET kv_transport_cudamock)
  add_executable(kv-bench-transport-mock ${CMAKE_SOURCE_DIR}/bench/bench_kv_transport.c)
  target_include_directories(kv-bench-transport-mock SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(kv-bench-transport-mock PRIVATE kv_transport_cudamock)
  add_test(NAME test_kv_transport_mock COMMAND kv-bench-transport-mock --blocks 40 --block-bytes 4096 --chunk 7 --reps 2)
  set_tests_properties(test_kv_transport_mock PROPERTIES TIMEOUT 120
    ENVIRONMENT "KV_CUDA_MOCK_DEVICES=2;KVSERVE_NCCL_LIB=$<TARGET_FILE:kv_nccl_mock>")
endif()
