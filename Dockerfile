# syntax=docker/dockerfile:1
# The image deploy/k8s runs (kvserve:latest): kv-router, kv-prefill, kv-decode, kv-frontend and
# kvctl in /usr/local/bin, on Debian 12 with the CUDA runtime.
#
#   docker build -t kvserve:latest .
#   docker build -t kvserve:cpu --build-arg KVSERVE_CUDA=OFF .     # no GPU backend, no CUDA libraries
#
# Both stages are debian:12 (the distribution CI builds and tests on); NVIDIA publishes no
# Debian-based nvidia/cuda images, so the CUDA toolkit (build) and runtime libraries (run)
# come from NVIDIA's Debian 12 apt repository, pinned to the major.minor the project uses
# (CUDA_VERSION; 13-0 = what scripts/gpu-bundle.sh is built with). The binaries keep the
# RUNPATH to /usr/local/cuda-X.Y/... they were linked with, which the same packages fill in the
# runtime stage. The GPU driver (libcuda.so.1) is not in the image: the NVIDIA container
# toolkit mounts the host's.
ARG DEBIAN_IMAGE=debian:12-slim
ARG CUDA_VERSION=13-0
ARG CUDA_KEYRING=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb

# ---- build -------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
ARG CUDA_VERSION
ARG CUDA_KEYRING
ARG KVSERVE_CUDA=ON
ADD ${CUDA_KEYRING} /tmp/cuda-keyring.deb
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
# install-deps.sh: the Debian packages CI builds with (idempotent, apt only). The CUDA
# toolkit: nvcc, the runtime and cuBLAS headers/libraries the CUDA backend links.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    KVSERVE_DEPS_BUILD_ONLY=1 bash /src/scripts/install-deps.sh; \
    if [ "$KVSERVE_CUDA" = ON ]; then \
      dpkg -i /tmp/cuda-keyring.deb; \
      apt-get update -qq; \
      apt-get install -y -qq --no-install-recommends \
        "cuda-nvcc-${CUDA_VERSION}" "cuda-cudart-dev-${CUDA_VERSION}" "libcublas-dev-${CUDA_VERSION}"; \
    fi; \
    rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb
COPY . /src
WORKDIR /src
# Exactly the targets `install(TARGETS ...)` in CMakeLists.txt names (tests/test_deploy.sh
# checks the two lists agree), then cmake --install puts them under /opt/kvserve.
RUN set -eux; \
    if [ "$KVSERVE_CUDA" = ON ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi; \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA="$KVSERVE_CUDA"; \
    ninja -C /build kv-router kv-prefill kv-decode kv-frontend kvctl kvclient_shared; \
    cmake --install /build --prefix /opt/kvserve; \
    strip /opt/kvserve/bin/*

# ---- run ---------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS run
ARG CUDA_VERSION
ARG CUDA_KEYRING
ARG KVSERVE_CUDA=ON
ADD ${CUDA_KEYRING} /tmp/cuda-keyring.deb
# The shared libraries the binaries load (readelf NEEDED; tests/test_deploy.sh checks this
# list against a build): ZeroMQ (+ libsodium for CURVE), protobuf-c, PCRE2, utf8proc, xxHash,
# libmicrohttpd (kv-frontend), the OpenMP runtime. OpenBLAS is linked statically (its OpenMP
# build, CMakeLists.txt), so no libopenblas package. CUDA: the runtime and cuBLAS(Lt) the
# backend links, and NCCL, which the workers load at run time for the nccl KV transport.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends \
      libzmq5 libsodium23 libprotobuf-c1 libpcre2-8-0 libutf8proc2 libmicrohttpd12 libxxhash0 libgomp1 ca-certificates; \
    if [ "$KVSERVE_CUDA" = ON ]; then \
      dpkg -i /tmp/cuda-keyring.deb; \
      apt-get update -qq; \
      apt-get install -y -qq --no-install-recommends \
        "cuda-cudart-${CUDA_VERSION}" "libcublas-${CUDA_VERSION}" libnccl2; \
    fi; \
    rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb; \
    groupadd --system --gid 10001 kvserve; \
    useradd --system --uid 10001 --gid kvserve --home-dir /var/lib/kvserve --shell /usr/sbin/nologin kvserve
COPY --from=build /opt/kvserve/bin/ /usr/local/bin/
COPY --from=build /opt/kvserve/lib/ /usr/local/lib/
COPY --from=build /opt/kvserve/include/ /usr/local/include/
COPY --from=build /opt/kvserve/share/doc/kvserve/ /usr/local/share/doc/kvserve/
RUN ldconfig
# The uid/gid the manifests run as (runAsUser/runAsGroup 10001); no shell login.
USER 10001:10001
# router client, router control, decode KV, kv-frontend HTTP (deploy/README.md).
EXPOSE 7100 7101 7200 8000
ENTRYPOINT []
CMD ["/usr/local/bin/kvctl", "--help"]
