/* Device probing and CUDA error conversion. */
#include <stdio.h>
#include <string.h>

#include "cuda_common.cuh"

int kv_cuda_error(kv_err *err, cudaError_t e, const char *call, const char *file, int line)
{
    const char *base = strrchr(file, '/');
    int code = e == cudaErrorMemoryAllocation ? KV_ENOMEM : KV_EIO;
    return kv_err_set(err, code, "cuda: %s failed: %s (%s, error %d) at %s:%d", call, cudaGetErrorString(e),
                      cudaGetErrorName(e), (int)e, base ? base + 1 : file, line);
}

size_t kv_cuda_dtype_size(kv_cuda_dtype dt)
{
    switch (dt) {
    case KV_CUDA_F32: return 4;
    case KV_CUDA_BF16: return 2;
    case KV_CUDA_F16: return 2;
    }
    return 0;
}

const char *kv_cuda_dtype_name(kv_cuda_dtype dt)
{
    switch (dt) {
    case KV_CUDA_F32: return "f32";
    case KV_CUDA_BF16: return "bf16";
    case KV_CUDA_F16: return "f16";
    }
    return "?";
}

int kv_cuda_device_count(int *n, kv_err *err)
{
    int count = 0;
    *n = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess) {
        *n = count;
        return KV_OK;
    }
    /* Clear the error so later runtime calls start clean; a GPU-less machine is not an
     * error for the caller, who falls back to the CPU backend. */
    (void)cudaGetLastError();
    if (e == cudaErrorInsufficientDriver)
        kv_err_set(err, KV_OK, "cuda: no usable NVIDIA driver (%s): 0 devices", cudaGetErrorString(e));
    else if (e == cudaErrorNoDevice)
        kv_err_set(err, KV_OK, "cuda: no CUDA-capable device: 0 devices");
    else if (e == cudaErrorStubLibrary)
        kv_err_set(err, KV_OK, "cuda: only the driver stub library is installed: 0 devices");
    else
        kv_err_set(err, KV_OK, "cuda: cudaGetDeviceCount failed: %s (%s, error %d): treating as 0 devices",
                   cudaGetErrorString(e), cudaGetErrorName(e), (int)e);
    return KV_OK;
}

int kv_cuda_device_info(int dev, char *name, size_t cap, size_t *mem_bytes, int *sm_major, int *sm_minor,
                        kv_err *err)
{
    cudaDeviceProp prop;
    KV_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    if (name && cap) {
        strncpy(name, prop.name, cap - 1);
        name[cap - 1] = '\0';
    }
    if (mem_bytes)
        *mem_bytes = prop.totalGlobalMem;
    if (sm_major)
        *sm_major = prop.major;
    if (sm_minor)
        *sm_minor = prop.minor;
    return KV_OK;
}

int kv_cuda_device_sm_count(int dev, int *n, kv_err *err)
{
    KV_CUDA_CHECK(cudaDeviceGetAttribute(n, cudaDevAttrMultiProcessorCount, dev));
    return KV_OK;
}

int kv_cuda_device_uuid(int dev, unsigned char uuid[16], kv_err *err)
{
    cudaDeviceProp prop;
    KV_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    memcpy(uuid, prop.uuid.bytes, 16);
    return KV_OK;
}
