# kv-prefill + kv-decode as processes, driven by a fake router (tests/test_workers_harness.c).
kv_add_test(test_workers_pair SOURCES test_workers_pair.c test_workers_harness.c test_workers_fuzz.c LIBS kv_engine kv_wire kv_transport
            LABELS integration)
target_compile_definitions(test_workers_pair PRIVATE KV_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
add_dependencies(test_workers_pair kv-prefill kv-decode)
set_tests_properties(test_workers_pair PROPERTIES ENVIRONMENT "KV_TEST_EXPECT_TRANSPORT=zmq")

# The same pair on the mock GPU (tests/cuda_mock.c, see tests/cuda.cmake): kv-prefill and
# kv-decode built on kv_engine_cudamock run with --device cuda:0, so the GPU side of the KV
# transfer (blocks staged out of the device pool, written into it) runs in CI.
if(TARGET kv_engine_cudamock)
  set(_kv_w ${CMAKE_SOURCE_DIR}/common/worker)
  # The workers' own source lists (their CMakeLists.txt), over the mock engine and transport.
  add_library(kv_worker_cudamock STATIC ${KV_WORKER_SOURCES})
  target_include_directories(kv_worker_cudamock PUBLIC ${_kv_w} ${CMAKE_SOURCE_DIR}/kvctl)
  target_link_libraries(kv_worker_cudamock PUBLIC kv_engine_cudamock kv_transport_cudamock kv_wire kv_curve kv_base)
  set(_kv_p ${CMAKE_SOURCE_DIR}/prefill_worker)
  set(_kv_d ${CMAKE_SOURCE_DIR}/decode_worker)
  add_executable(kv-prefill-cudamock ${_kv_p}/prefill_main.c ${KV_PREFILL_SOURCES})
  target_include_directories(kv-prefill-cudamock PRIVATE ${_kv_p})
  target_link_libraries(kv-prefill-cudamock PRIVATE kv_worker_cudamock)
  add_executable(kv-decode-cudamock ${_kv_d}/decode_main.c ${KV_DECODE_SOURCES})
  target_include_directories(kv-decode-cudamock PRIVATE ${_kv_d})
  target_link_libraries(kv-decode-cudamock PRIVATE kv_worker_cudamock)
  add_dependencies(test_workers_pair kv-prefill-cudamock kv-decode-cudamock)
endif()


# The pair on the mock GPU once per KV transport: auto (both on cuda:0 of one node, so
# cuda-ipc: the decode worker copies out of the prefill worker's exported pool), zmq
# (blocks staged through host memory), and nccl (two mock GPUs, the communicator over
# libkv_nccl_mock.so). Each asserts which transport every transfer used.
if(TARGET kv-prefill-cudamock)
  set(_kv_mock_env "KV_TEST_WORKER_SUFFIX=-cudamock;KV_TEST_WORKER_DEVICE=cuda:0;KVSERVE_NCCL_LIB=$<TARGET_FILE:kv_nccl_mock>")
  add_test(NAME test_workers_pair_cudamock COMMAND test_workers_pair)
  set_tests_properties(test_workers_pair_cudamock PROPERTIES
    ENVIRONMENT "${_kv_mock_env};KV_TEST_EXPECT_TRANSPORT=cuda-ipc")
  add_test(NAME test_workers_pair_cudamock_zmq COMMAND test_workers_pair)
  set_tests_properties(test_workers_pair_cudamock_zmq PROPERTIES
    ENVIRONMENT "${_kv_mock_env};KV_TEST_KV_TRANSPORT=zmq;KV_TEST_EXPECT_TRANSPORT=zmq")
  add_test(NAME test_workers_pair_cudamock_nccl COMMAND test_workers_pair)
  set_tests_properties(test_workers_pair_cudamock_nccl PROPERTIES
    ENVIRONMENT "${_kv_mock_env};KV_CUDA_MOCK_DEVICES=2;KV_TEST_DECODE_DEVICE=cuda:1;KV_TEST_KV_TRANSPORT=nccl;KV_TEST_EXPECT_TRANSPORT=nccl")
  set_tests_properties(test_workers_pair_cudamock test_workers_pair_cudamock_zmq test_workers_pair_cudamock_nccl
    PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS integration)
  add_dependencies(test_workers_pair kv_nccl_mock)
endif()

# The cluster with the workers on the mock GPU (above):
# parity 1P1D / 2P2D, a decode worker killed mid-stream and KV reported corrupt once (re-planned),
# with the KV over cuda-ipc (all on mock cuda:0) and over nccl (prefill workers on mock
# cuda:0, decode workers on cuda:1); over cuda-ipc also a prefill worker that insists on nccl
# on that one GPU (its pair refused, the work going to the other prefill worker).
if(TARGET test_cluster AND TARGET kv-prefill-cudamock)
  set(_kv_cl_env "KV_TEST_WORKER_SUFFIX=-cudamock;KVSERVE_NCCL_LIB=$<TARGET_FILE:kv_nccl_mock>")
  set(_kv_cl_scenarios "1p1d,2p2d,kill-decode,corrupt-kv,fuzz")
  add_test(NAME test_cluster_cudamock_ipc COMMAND test_cluster)
  set_tests_properties(test_cluster_cudamock_ipc PROPERTIES ENVIRONMENT
    "${_kv_cl_env};KV_CLUSTER_ONLY=${_kv_cl_scenarios},no-transport;KV_TEST_PREFILL_ARGS=--device cuda:0 --precision f32;KV_TEST_DECODE_ARGS=--device cuda:0 --precision f32;KV_TEST_EXPECT_TRANSPORT=cuda-ipc")
  add_test(NAME test_cluster_cudamock_nccl COMMAND test_cluster)
  set_tests_properties(test_cluster_cudamock_nccl PROPERTIES ENVIRONMENT
    "${_kv_cl_env};KV_CLUSTER_ONLY=${_kv_cl_scenarios};KV_CUDA_MOCK_DEVICES=2;KV_TEST_PREFILL_ARGS=--device cuda:0 --precision f32 --kv-transport nccl;KV_TEST_DECODE_ARGS=--device cuda:1 --precision f32;KV_TEST_EXPECT_TRANSPORT=nccl")
  set_tests_properties(test_cluster_cudamock_ipc test_cluster_cudamock_nccl PROPERTIES
    SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS integration)
  add_dependencies(test_cluster kv-prefill-cudamock kv-decode-cudamock kv_nccl_mock)
endif()
