# kv-prefill + kv-decode as processes, driven by a fake router (tests/test_workers_harness.c).
kv_add_test(test_workers_pair SOURCES test_workers_pair.c test_workers_harness.c LIBS kv_engine kv_wire
            LABELS integration)
target_compile_definitions(test_workers_pair PRIVATE KV_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
add_dependencies(test_workers_pair kv-prefill kv-decode)

# The same pair on the mock GPU (tests/cuda_mock.c, see tests/cuda.cmake): kv-prefill and
# kv-decode built on kv_engine_cudamock run with --device cuda:0, so the GPU side of the KV
# transfer (blocks staged out of the device pool, written into it) runs in CI.
if(TARGET kv_engine_cudamock)
  set(_kv_w ${CMAKE_SOURCE_DIR}/common/worker)
  add_library(kv_worker_cudamock STATIC
    ${_kv_w}/worker_flags.c ${_kv_w}/worker_signal.c ${_kv_w}/worker_loop.c ${_kv_w}/worker_engine.c
    ${_kv_w}/worker_proto.c ${_kv_w}/worker_control.c ${CMAKE_SOURCE_DIR}/kvctl/kvctl_args.c)
  target_include_directories(kv_worker_cudamock PUBLIC ${_kv_w} ${CMAKE_SOURCE_DIR}/kvctl)
  target_link_libraries(kv_worker_cudamock PUBLIC kv_engine_cudamock kv_wire kv_base)
  set(_kv_p ${CMAKE_SOURCE_DIR}/prefill_worker)
  set(_kv_d ${CMAKE_SOURCE_DIR}/decode_worker)
  add_executable(kv-prefill-cudamock ${_kv_p}/prefill_main.c ${_kv_p}/prefill_task.c ${_kv_p}/prefill_run.c
                 ${_kv_p}/kv_sender.c)
  target_include_directories(kv-prefill-cudamock PRIVATE ${_kv_p})
  target_link_libraries(kv-prefill-cudamock PRIVATE kv_worker_cudamock)
  add_executable(kv-decode-cudamock ${_kv_d}/decode_main.c ${_kv_d}/decode_reserve.c ${_kv_d}/kv_receiver.c
                 ${_kv_d}/decode_batch.c)
  target_include_directories(kv-decode-cudamock PRIVATE ${_kv_d})
  target_link_libraries(kv-decode-cudamock PRIVATE kv_worker_cudamock)
  add_test(NAME test_workers_pair_cudamock COMMAND test_workers_pair)
  set_tests_properties(test_workers_pair_cudamock PROPERTIES
    ENVIRONMENT "KV_TEST_WORKER_SUFFIX=-cudamock;KV_TEST_WORKER_DEVICE=cuda:0"
    SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS integration)
  add_dependencies(test_workers_pair kv-prefill-cudamock kv-decode-cudamock)
endif()
