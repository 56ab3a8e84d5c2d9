# Metrics: the router's bookkeeping -> StatusReply -> libkvclient -> kv-frontend's /metrics,
# and the Grafana dashboard's queries against that exposition (no processes, no model).
if(TARGET kv_frontend_core AND TARGET kv_router)
  kv_add_test(test_metrics SOURCES test_metrics.c LIBS kv_router kv_frontend_core kvclient kv_json kv_base)
  target_compile_definitions(test_metrics PRIVATE KV_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
