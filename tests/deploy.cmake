# deploy/ (systemd units, Kubernetes manifests, Dockerfile) checked statically, and the
# probes the manifests use (kvctl status --timeout-ms / --worker, --alive-file) against real
# processes. tests/test_deploy.sh says what; skips parts whose tools are missing.
if(TARGET kvctl AND TARGET kv-frontend)
  add_test(NAME test_deploy
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_deploy.sh ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR} ${KV_DEFAULT_MODELS})
  set_tests_properties(test_deploy PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS integration)
endif()
