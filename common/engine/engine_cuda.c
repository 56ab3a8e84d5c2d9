/* The CUDA backend's set-up and teardown: device checks, weights uploaded once (f32
 * checkpoints converted to bf16 on the device in bf16 mode, kept f32 in the exactness
 * mode), the KV pool in device memory (kv_pool keeps only the bookkeeping), activation and
 * input buffers, and whole-block copies between the pool and host memory. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "engine_cuda.h"
#include "kv_log.h"

#define ALIGN 256
#define UPLOAD_CHUNK ((size_t)16 << 20) /* floats per host->device conversion step (64 MiB) */

static size_t align_up(size_t x) { return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1); }
static double gib(size_t b) { return (double)b / (double)(1u << 30); }

int cu_fail(kv_err *err, cudaError_t e, const char *call, const char *file, int line)
{
    const char *base = strrchr(file, '/');
    /* Clears a non-sticky error so the next call starts clean; a sticky one (a fault in a
     * kernel) stays and every later call reports it. */
    (void)cudaGetLastError();
    return kv_err_set(err, e == cudaErrorMemoryAllocation ? KV_ENOMEM : KV_EIO, "cuda: %s failed: %s (%s, error %d) at %s:%d",
                      call, cudaGetErrorString(e), cudaGetErrorName(e), (int)e, base ? base + 1 : file, line);
}

/* cudaMalloc with a message that says what did not fit. */
static int dev_alloc(void **p, size_t bytes, const char *what, kv_err *err)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e == cudaSuccess)
        return KV_OK;
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    return kv_err_set(err, e == cudaErrorMemoryAllocation ? KV_ENOMEM : KV_EIO,
                      "cuda: cannot allocate %.2f GiB for %s (%.2f of %.2f GiB free): %s", gib(bytes), what,
                      gib(free_b), gib(total_b), cudaGetErrorString(e));
}

static void dev_free(void *p)
{
    if (p)
        cudaFree(p);
}

int kv_engine_cuda_probe(int index, int *n_devices, kv_err *why)
{
    kv_err_set(why, KV_OK, "%s", "");
    int rc = kv_cuda_device_count(n_devices, why);
    if (rc)
        return rc;
    if (*n_devices == 0) {
        char reason[sizeof why->msg];
        snprintf(reason, sizeof reason, "%s", why->msg[0] ? why->msg : "none found");
        return kv_err_set(why, KV_EUNSUPPORTED, "no CUDA device: %.400s", reason);
    }
    if (index < 0 || index >= *n_devices)
        return kv_err_set(why, KV_ERANGE, "cuda:%d does not exist (%d CUDA device%s: cuda:0..cuda:%d)", index,
                          *n_devices, *n_devices == 1 ? "" : "s", *n_devices - 1);
    char name[128];
    int major = 0, minor = 0;
    if ((rc = kv_cuda_device_info(index, name, sizeof name, NULL, &major, &minor, why)))
        return rc;
    /* Built for sm_90 (SASS + PTX): older GPUs cannot run the kernels. */
    if (major < 9)
        return kv_err_set(why, KV_EUNSUPPORTED, "cuda:%d (%s) is sm_%d%d; this build runs on sm_90 and newer", index,
                          name, major, minor);
    return KV_OK;
}

/* Copies n host floats to dst on the device in dtype c->dt, through `stage` (UPLOAD_CHUNK
 * device floats) when a conversion is needed. */
static int upload(cu_engine *c, void *dst, const float *src, size_t n, float *stage, kv_err *err)
{
    if (c->dt == KV_CUDA_F32) {
        CU_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        return KV_OK;
    }
    for (size_t off = 0; off < n; off += UPLOAD_CHUNK) {
        size_t m = n - off < UPLOAD_CHUNK ? n - off : UPLOAD_CHUNK;
        /* Same stream: the conversion of a piece is done before the next copy overwrites stage. */
        CU_CHECK(cudaMemcpyAsync(stage, src + off, m * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        KC_CHECK(kv_cuda_convert((char *)dst + off * c->es, c->dt, stage, KV_CUDA_F32, m, c->stream, err));
    }
    return KV_OK;
}

/* One weight: its host source, element count and where its device address goes. */
typedef struct wspec {
    const float *src;
    size_t n;
    void **dst;       /* NULL: the tail of the tensor before it */
    int packed;       /* the next spec follows with no alignment gap */
} wspec;

/* The f32 host data of a weight: in place when stored as f32, else expanded into a buffer
 * (the GPU engine computes from f32 or bf16 device copies; the stored formats' GPU kernels
 * are issue 15's item 3). NULL when out of memory. */
static const float *host_f32(const kv_weight *w, float **owned)
{
    *owned = NULL;
    if (w->type == KV_TYPE_F32)
        return w->data;
    size_t n = (size_t)w->rows * (size_t)w->cols;
    if (!(*owned = malloc(n * sizeof **owned)))
        return NULL;
    kv_type_traits(w->type)->to_f32(w->data, *owned, n);
    return *owned;
}

static int upload_weights(kv_engine *e, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model *m = e->model;
    const kv_model_config *cfg = &m->cfg;
    size_t h = (size_t)cfg->hidden_size, q = (size_t)cfg->n_heads * (size_t)cfg->head_dim;
    size_t kv = (size_t)cfg->n_kv_heads * (size_t)cfg->head_dim, ff = (size_t)cfg->intermediate_size;
    size_t n_specs = 3 + 9 * (size_t)cfg->n_layers;
    wspec *specs = calloc(n_specs, sizeof *specs);
    float **owned = calloc(n_specs, sizeof *owned);
    if (!specs || !owned || !(c->layers = calloc((size_t)cfg->n_layers, sizeof *c->layers))) {
        free(specs);
        free(owned);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    size_t k = 0;
#define W32(w) host_f32((w), &owned[k])
    specs[k] = (wspec){W32(&m->embed), (size_t)cfg->vocab_size * h, &c->embed, 0}, k++;
    for (int l = 0; l < cfg->n_layers; l++) {
        const kv_layer_weights *w = &m->layers[l];
        cu_layer *d = &c->layers[l];
        specs[k++] = (wspec){w->attn_norm, h, &d->attn_norm, 0};
        specs[k] = (wspec){W32(&w->wq), q * h, &d->wqkv, 1}, k++;
        specs[k] = (wspec){W32(&w->wk), kv * h, NULL, 1}, k++;
        specs[k] = (wspec){W32(&w->wv), kv * h, NULL, 0}, k++;
        specs[k] = (wspec){W32(&w->wo), h * q, &d->wo, 0}, k++;
        specs[k++] = (wspec){w->mlp_norm, h, &d->mlp_norm, 0};
        specs[k] = (wspec){W32(&w->w_gate), ff * h, &d->w_gu, 1}, k++;
        specs[k] = (wspec){W32(&w->w_up), ff * h, NULL, 0}, k++;
        specs[k] = (wspec){W32(&w->w_down), h * ff, &d->w_down, 0}, k++;
    }
    specs[k++] = (wspec){m->final_norm, h, &c->final_norm, 0};
    int tied = m->lm_head.data == m->embed.data; /* tied embeddings share one device copy */
    if (!tied)
        specs[k] = (wspec){W32(&m->lm_head), (size_t)cfg->vocab_size * h, &c->lm_head, 0}, k++;
#undef W32
    for (size_t i = 0; i < k; i++)
        if (!specs[i].src) {
            for (size_t j = 0; j < k; j++)
                free(owned[j]);
            free(owned);
            free(specs);
            return kv_err_set(err, KV_ENOMEM, "out of memory expanding the weights to f32 for the GPU");
        }
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total = specs[i].packed ? total + specs[i].n * c->es : align_up(total + specs[i].n * c->es);
    float *stage = NULL;
    int rc = dev_alloc(&c->w_mem, total, "the weights", err);
    if (!rc && c->dt != KV_CUDA_F32)
        rc = dev_alloc((void **)&stage, UPLOAD_CHUNK * sizeof(float), "the weight conversion buffer", err);
    size_t off = 0;
    for (size_t i = 0; !rc && i < k; i++) {
        void *at = (char *)c->w_mem + off;
        if (specs[i].dst)
            *specs[i].dst = at;
        off = specs[i].packed ? off + specs[i].n * c->es : align_up(off + specs[i].n * c->es);
        rc = upload(c, at, specs[i].src, specs[i].n, stage, err);
    }
    if (tied)
        c->lm_head = c->embed;
    c->w_bytes = total;
    if (!rc) {
        cudaError_t ce = cudaStreamSynchronize(c->stream);
        if (ce != cudaSuccess)
            rc = cu_fail(err, ce, "cudaStreamSynchronize (weight upload)", __FILE__, __LINE__);
    }
    dev_free(stage);
    for (size_t i = 0; i < k; i++)
        free(owned[i]);
    free(owned);
    free(specs);
    return rc;
}

/* The input block's size for the current capacities, in int32s. */
static size_t in_ints(const cu_engine *c)
{
    return 3 * (size_t)c->cap_rows + (size_t)c->dec_rows * (size_t)c->table_stride;
}

static int alloc_activations(kv_engine *e, int rows, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    dev_free(c->a_mem);
    c->a_mem = NULL;
    size_t r = (size_t)rows, h = (size_t)cfg->hidden_size, es = c->es;
    size_t q = (size_t)cfg->n_heads * (size_t)cfg->head_dim, kv = (size_t)cfg->n_kv_heads * (size_t)cfg->head_dim;
    size_t ff = (size_t)cfg->intermediate_size, wide = q > h ? q : h, fused = 2 * ff > q + 2 * kv ? 2 * ff : q + 2 * kv;
    size_t sizes[8] = {r * h * es, r * wide * es, r * q * es, r * kv * es, r * kv * es, r * q * es, r * ff * es, r * fused * es};
    void **dst[8] = {&c->x, &c->xb, &c->q, &c->k, &c->v, &c->att, &c->hb, &c->gu};
    size_t total = 0;
    for (int i = 0; i < 8; i++)
        total += align_up(sizes[i]);
    KC_CHECK(dev_alloc(&c->a_mem, total, "activations", err));
    size_t off = 0;
    for (int i = 0; i < 8; i++) {
        *dst[i] = (char *)c->a_mem + off;
        off += align_up(sizes[i]);
    }
    return KV_OK;
}

static int alloc_inputs(cu_engine *c, kv_err *err)
{
    dev_free(c->d_in);
    if (c->h_in)
        cudaFreeHost(c->h_in);
    c->d_in = c->h_in = NULL;
    size_t bytes = in_ints(c) * sizeof(int32_t);
    KC_CHECK(dev_alloc((void **)&c->d_in, bytes, "step inputs", err));
    cudaError_t ce = cudaHostAlloc((void **)&c->h_in, bytes, cudaHostAllocDefault);
    if (ce != cudaSuccess) {
        c->h_in = NULL;
        return cu_fail(err, ce, "cudaHostAlloc (step inputs)", __FILE__, __LINE__);
    }
    return KV_OK;
}

static void free_sampling(cu_engine *c)
{
    dev_free(c->d_smp);
    if (c->h_smp)
        cudaFreeHost(c->h_smp);
    c->d_smp = c->h_smp = NULL;
}

static int alloc_sampling(cu_engine *c, int dec_rows, kv_err *err)
{
    free_sampling(c);
    size_t bytes = (size_t)dec_rows * (sizeof(kv_cuda_sample_params) + sizeof(int32_t));
    KC_CHECK(dev_alloc(&c->d_smp, bytes, "sampling", err));
    cudaError_t ce = cudaHostAlloc(&c->h_smp, bytes, cudaHostAllocDefault);
    if (ce != cudaSuccess) {
        c->h_smp = NULL;
        return cu_fail(err, ce, "cudaHostAlloc (sampling)", __FILE__, __LINE__);
    }
    return KV_OK;
}

static void free_logprobs(cu_engine *c)
{
    dev_free(c->d_lp);
    if (c->h_lp)
        cudaFreeHost(c->h_lp);
    c->d_lp = c->h_lp = NULL;
    c->lp_rows = 0;
}

int cu_ensure_logprobs(cu_engine *c, int n, kv_err *err)
{
    if (n <= c->lp_rows)
        return KV_OK;
    free_logprobs(c);
    size_t bytes = (size_t)n * (sizeof(kv_cuda_logprob_row) + sizeof(int32_t));
    KC_CHECK(dev_alloc(&c->d_lp, bytes, "decode logprobs", err));
    cudaError_t ce = cudaHostAlloc(&c->h_lp, bytes, cudaHostAllocDefault);
    if (ce != cudaSuccess) {
        c->h_lp = NULL;
        free_logprobs(c);
        return cu_fail(err, ce, "cudaHostAlloc (decode logprobs)", __FILE__, __LINE__);
    }
    c->lp_rows = n;
    return KV_OK;
}

int cu_ensure_capacity(kv_engine *e, int rows, int dec_rows, int logit_rows, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    int grow_rows = rows > c->cap_rows, grow_dec = dec_rows > c->dec_rows, grow_logits = logit_rows > c->logit_rows;
    if (!grow_rows && !grow_dec && !grow_logits)
        return KV_OK;
    cu_graphs_clear(c); /* every graph holds addresses about to change */
    CU_CHECK(cudaStreamSynchronize(c->stream));
    /* A failure leaves the capacity at 0, so that the next call retries the allocation. */
    if (grow_logits) {
        dev_free(c->logits);
        c->logits = NULL;
        c->logit_rows = 0;
        KC_CHECK(dev_alloc((void **)&c->logits, (size_t)logit_rows * (size_t)cfg->vocab_size * sizeof(float),
                           "logits", err));
        c->logit_rows = logit_rows;
    }
    if (grow_dec) {
        dev_free(c->attn_ws);
        c->attn_ws = NULL;
        c->dec_rows = 0;
        c->attn_ws_bytes =
            kv_cuda_decode_workspace_bytes(dec_rows, cfg->n_heads, cfg->head_dim, KV_CUDA_DECODE_MAX_SPLITS);
        KC_CHECK(dev_alloc(&c->attn_ws, c->attn_ws_bytes, "the decode attention workspace", err));
        KC_CHECK(alloc_sampling(c, dec_rows, err));
        c->dec_rows = dec_rows;
    }
    if (grow_rows) {
        c->cap_rows = 0;
        KC_CHECK(alloc_activations(e, rows, err));
        c->cap_rows = rows;
    }
    if (grow_rows || grow_dec) {
        int rc = alloc_inputs(c, err);
        if (rc) {
            c->cap_rows = c->dec_rows = 0;
            return rc;
        }
    }
    return KV_OK;
}

static int cu_sync(kv_engine *e, kv_err *err)
{
    cu_engine *c = cu_of(e);
    CU_CHECK(cudaSetDevice(c->device));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return KV_OK;
}

/* Runs of consecutive block ids move in one copy. */
static int blocks_copy(kv_engine *e, const int32_t *blocks, int n, void *host, int to_host, kv_err *err)
{
    cu_engine *c = cu_of(e);
    size_t bb = kv_pool_nbytes_per_block(&e->pool);
    CU_CHECK(cudaSetDevice(c->device));
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && blocks[j] == blocks[j - 1] + 1)
            j++;
        char *dev = (char *)c->kv_mem + (size_t)blocks[i] * bb, *hst = (char *)host + (size_t)i * bb;
        size_t bytes = (size_t)(j - i) * bb;
        if (to_host)
            CU_CHECK(cudaMemcpyAsync(hst, dev, bytes, cudaMemcpyDeviceToHost, c->stream));
        else
            CU_CHECK(cudaMemcpyAsync(dev, hst, bytes, cudaMemcpyHostToDevice, c->stream));
        i = j;
    }
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return KV_OK;
}

static int cu_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err)
{
    return blocks_copy(e, blocks, n, dst, 1, err);
}

static int cu_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err)
{
    return blocks_copy(e, blocks, n, (void *)src, 0, err);
}

static void cu_destroy(kv_engine *e)
{
    cu_engine *c = cu_of(e);
    if (!c)
        return;
    cudaSetDevice(c->device);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    cu_graphs_clear(c);
    dev_free(c->a_mem);
    dev_free(c->attn_ws);
    dev_free(c->d_in);
    if (c->h_in)
        cudaFreeHost(c->h_in);
    free_sampling(c);
    free_logprobs(c);
    free(c->host_row);
    free(c->host_cands);
    dev_free(c->logits);
    dev_free(c->kv_mem);
    dev_free(c->w_mem);
    dev_free(c->inv_freq);
    kv_cuda_blas_destroy(c->blas); /* before its workspace goes */
    dev_free(c->blas_ws);
    if (c->in_read)
        cudaEventDestroy(c->in_read);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c->layers);
    free(c);
    e->backend = NULL;
}

static const kv_engine_ops cuda_ops = {
    .prefill = cu_prefill,
    .decode = cu_decode,
    .decode_sample = cu_decode_sample,
    .sync = cu_sync,
    .blocks_read = cu_blocks_read,
    .blocks_write = cu_blocks_write,
    .destroy = cu_destroy,
};

static int init_rope(kv_engine *e, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    size_t half = (size_t)cfg->head_dim / 2;
    float *host = malloc(half * sizeof(float));
    if (!host)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    kc_rope_params rp = {cfg->head_dim, cfg->rope_theta, cfg->rope_scaling, cfg->rope_factor, cfg->rope_low_freq_factor,
                         cfg->rope_high_freq_factor, cfg->rope_original_max_position};
    kc_rope_inv_freq(host, &rp); /* the CPU's own frequencies: the same angles on both */
    int rc = dev_alloc((void **)&c->inv_freq, half * sizeof(float), "RoPE frequencies", err);
    if (!rc) {
        /* On the engine's stream (non-blocking: it would not wait for the legacy one's
         * copy), and finished before host goes. */
        cudaError_t ce = cudaMemcpyAsync(c->inv_freq, host, half * sizeof(float), cudaMemcpyHostToDevice, c->stream);
        if (ce == cudaSuccess)
            ce = cudaStreamSynchronize(c->stream);
        if (ce != cudaSuccess)
            rc = cu_fail(err, ce, "cudaMemcpyAsync (RoPE frequencies)", __FILE__, __LINE__);
    }
    free(host);
    return rc;
}

static int init_pool(kv_engine *e, const kv_engine_options *o, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    kv_pool_shape shape = {cfg->n_layers, cfg->n_kv_heads, cfg->head_dim, o->block_size};
    size_t bb = kv_pool_block_bytes_of(&shape, c->es);
    int32_t n_blocks = kv_engine_pool_blocks(cfg, o, bb);
    if (n_blocks <= 0)
        return kv_err_set(err, KV_EINVAL, "kv pool: %zu bytes hold no block of %zu bytes", o->kv_bytes, bb);
    KC_CHECK(dev_alloc(&c->kv_mem, (size_t)n_blocks * bb, "the KV pool", err));
    /* Defined bytes: a partly filled block ships its unused slots too. */
    CU_CHECK(cudaMemsetAsync(c->kv_mem, 0, (size_t)n_blocks * bb, c->stream));
    return kv_pool_init_external(&e->pool, &shape, n_blocks, c->es, c->kv_mem, err);
}

static int init_device(kv_engine *e, const kv_engine_options *o, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    CU_CHECK(cudaSetDevice(c->device));
    KC_CHECK(kv_cuda_device_sm_count(c->device, &c->n_sms, err));
    CU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU_CHECK(cudaEventCreateWithFlags(&c->in_read, cudaEventDisableTiming));
    KC_CHECK(kv_cuda_blas_create(&c->blas, err));
    KC_CHECK(dev_alloc(&c->blas_ws, CU_BLAS_WS_BYTES, "the cuBLAS workspace", err));
    KC_CHECK(kv_cuda_blas_set_workspace(c->blas, c->stream, c->blas_ws, CU_BLAS_WS_BYTES, err));
    KC_CHECK(upload_weights(e, err));
    KC_CHECK(init_rope(e, err));
    KC_CHECK(init_pool(e, o, err));
    c->table_stride = (cfg->max_position + o->block_size - 1) / o->block_size;
    int chunk_rows = o->prefill_chunk < cfg->max_position ? o->prefill_chunk : cfg->max_position;
    int dec_rows = o->max_batch > CU_GRAPH_MAX_ROWS ? o->max_batch : CU_GRAPH_MAX_ROWS;
    KC_CHECK(cu_ensure_capacity(e, chunk_rows > dec_rows ? chunk_rows : dec_rows, dec_rows, dec_rows, err));
    KC_CHECK(cu_gemv_choose(e, err));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return KV_OK;
}

int kv_engine_cuda_init(kv_engine *e, const kv_engine_options *o, kv_err *err)
{
    int n_dev = 0;
    int rc = kv_engine_cuda_probe(o->device, &n_dev, err);
    if (rc)
        return kv_err_wrap(err, "engine: cuda:%d", o->device);
    /* --threads bounds the host side too (f32 -> bf16 conversion loops, and every kernel of
     * the CPU stand-in that CI runs this engine on): idle OpenMP teams spin on their cores. */
    if (o->n_threads > 0)
        omp_set_num_threads(o->n_threads);
    cu_engine *c = calloc(1, sizeof *c);
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    c->device = o->device;
    c->dt = e->precision == KV_PRECISION_BF16 ? KV_CUDA_BF16 : KV_CUDA_F32;
    c->es = kv_cuda_dtype_size(c->dt);
    const char *env = getenv("KVSERVE_CUDA_GRAPHS");
    c->graphs_on = !(env && !strcmp(env, "0"));
    e->backend = c;
    e->ops = &cuda_ops;
    if ((rc = init_device(e, o, err))) {
        cu_destroy(e);
        kv_pool_destroy(&e->pool);
        return kv_err_wrap(err, "engine: cuda:%d", o->device);
    }
    char name[128] = "?";
    size_t mem = 0;
    kv_err ierr;
    kv_cuda_device_info(c->device, name, sizeof name, &mem, NULL, NULL, &ierr);
    KV_INFO("engine",
            "msg=\"cuda engine ready\" device=cuda:%d gpu=\"%s\" sms=%d precision=%s weights_gib=%.2f kv_blocks=%d "
            "kv_gib=%.2f block_bytes=%zu graphs=%s",
            c->device, name, c->n_sms, kv_cuda_dtype_name(c->dt), gib(c->w_bytes), e->pool.n_blocks,
            gib((size_t)e->pool.n_blocks * kv_pool_nbytes_per_block(&e->pool)), kv_pool_nbytes_per_block(&e->pool),
            c->graphs_on ? "on" : "off (KVSERVE_CUDA_GRAPHS=0)");
    return KV_OK;
}
