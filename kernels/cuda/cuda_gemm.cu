/* GEMM through cuBLAS (twin of kc_matmul): y[m][n] = x[m][k] . w[n][k]^T, fp32 accumulation.
 * Row-major y is column-major y^T (n x m), so cuBLAS computes y^T = w . x^T with w read
 * transposed: C(n x m) = op_T(A = w, k x n) . B(= x^T, k x m). */
#include <cublas_v2.h>

#include "cuda_common.cuh"

static int blas_error(kv_err *err, cublasStatus_t st, const char *call, int line)
{
    return kv_err_set(err, st == CUBLAS_STATUS_ALLOC_FAILED ? KV_ENOMEM : KV_EIO,
                      "cublas: %s failed: %s (%s, status %d) at cuda_gemm.cu:%d", call, cublasGetStatusString(st),
                      cublasGetStatusName(st), (int)st, line);
}

#define KV_BLAS_CHECK(call)                                    \
    do {                                                       \
        cublasStatus_t kv_st_ = (call);                        \
        if (kv_st_ != CUBLAS_STATUS_SUCCESS)                   \
            return blas_error(err, kv_st_, #call, __LINE__);   \
    } while (0)

extern "C" int kv_cuda_blas_create(void **handle, kv_err *err)
{
    cublasHandle_t h = NULL;
    *handle = NULL;
    KV_BLAS_CHECK(cublasCreate(&h));
    *handle = h;
    return KV_OK;
}

extern "C" void kv_cuda_blas_destroy(void *handle)
{
    if (handle)
        cublasDestroy((cublasHandle_t)handle);
}

static int type_of(kv_cuda_dtype dt, cudaDataType_t *t)
{
    switch (dt) {
    case KV_CUDA_F32: *t = CUDA_R_32F; return 0;
    case KV_CUDA_BF16: *t = CUDA_R_16BF; return 0;
    case KV_CUDA_F16: *t = CUDA_R_16F; return 0;
    }
    return -1;
}

/* cublasSetStream also resets the handle's workspace to cuBLAS's own pool (cuBLAS docs), so
 * it is called only when the stream really changes: a workspace set for this stream stays. */
static int use_stream(cublasHandle_t h, cudaStream_t s, kv_err *err)
{
    cudaStream_t cur = NULL;
    KV_BLAS_CHECK(cublasGetStream(h, &cur));
    if (cur != s)
        KV_BLAS_CHECK(cublasSetStream(h, s));
    return KV_OK;
}

extern "C" int kv_cuda_blas_set_workspace(void *handle, void *stream, void *ws, size_t bytes, kv_err *err)
{
    if (!handle || !ws || bytes == 0)
        return kv_err_set(err, KV_EINVAL, "cuda blas workspace: bad call (handle %p, %zu bytes)", handle, bytes);
    cublasHandle_t h = (cublasHandle_t)handle;
    KV_BLAS_CHECK(cublasSetStream(h, KV_STREAM(stream)));
    KV_BLAS_CHECK(cublasSetWorkspace(h, ws, bytes));
    return KV_OK;
}

extern "C" int kv_cuda_gemm_out(void *handle, void *y, kv_cuda_dtype y_dt, const void *x, const void *w, int m, int n,
                                int k, kv_cuda_dtype dt, void *stream, kv_err *err)
{
    if (!handle || m < 0 || n <= 0 || k <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda gemm: bad call (handle %p, m=%d n=%d k=%d)", handle, m, n, k);
    cudaDataType_t type, y_type;
    if (type_of(dt, &type) || type_of(y_dt, &y_type))
        return kv_err_set(err, KV_EINVAL, "cuda gemm: unknown dtype %d -> %d", (int)dt, (int)y_dt);
    if (y_dt != dt && y_dt != KV_CUDA_F32)
        return kv_err_set(err, KV_EINVAL, "cuda gemm: output must be %s or f32, got %s", kv_cuda_dtype_name(dt),
                          kv_cuda_dtype_name(y_dt));
    if (m == 0)
        return KV_OK;
    cublasHandle_t h = (cublasHandle_t)handle;
    const float alpha = 1.0f, beta = 0.0f;
    int rc = use_stream(h, KV_STREAM(stream), err);
    if (rc)
        return rc;
    /* Default math: f32 stays true fp32 (no TF32), the exactness mode; 16-bit inputs use
     * tensor cores with fp32 accumulation either way. */
    KV_BLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    KV_BLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, type, k, x, type, k, &beta, y, y_type,
                               n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return KV_OK;
}

extern "C" int kv_cuda_gemm(void *handle, void *y, const void *x, const void *w, int m, int n, int k,
                            kv_cuda_dtype dt, void *stream, kv_err *err)
{
    return kv_cuda_gemm_out(handle, y, dt, x, w, m, n, k, dt, stream, err);
}
