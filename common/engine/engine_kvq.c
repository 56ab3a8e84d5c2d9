#include "engine_kvq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"
#include "simd.h"

#define KVQ_MAX_HEAD_DIM 1024 /* a head's row converted on the stack (f16 / bf16 layouts) */

struct kvq {
    const kv_layout *l;
    const kv_pool *pool; /* whose blocks are staged (its refcounts say which are free) */
    int residual_blocks; /* the layout's, and at least the block being filled (f16 / bf16) */
    kq_format f;
    kq_regions r;
    size_t row;          /* floats per token row of one layer's K (or V) */
    size_t slot_floats;  /* one layer's K and V rows of a staging block */
    size_t stage_floats; /* one staging block, every owner layer */
    float *stage;        /* cap_stage staging blocks */
    int32_t cap_stage, n_free;
    int32_t *free_ids;   /* free staging blocks */
    int32_t n_blocks;    /* of the pool */
    int32_t *stage_of;   /* pool block -> its staging block, or -1 */
    uint8_t *sealed;     /* pool block holds its codes (every owner layer) */
    uint8_t *shipped;    /* a prefill's partial last block, stored quantized: read back from
                          * those codes by the first decode step, as a receiver would */
    /* Attention's per-sequence tables, tab_cap entries each. */
    const void **bptr;
    int32_t *fpt;
    size_t tab_cap;
};

/* ---- f16 / bf16 layouts: sealed blocks hold K then V rows of halves (kv_layout.h) ---- */

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* NaN stays a quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void halves_from(uint16_t *dst, const float *src, size_t n, int bf16)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16 ? to_bf16(src[i]) : kq_f32_to_f16(src[i]);
}
/* Every sealed row is converted again for each query that reads it, so this is the f16 /
 * bf16 attention's inner loop: 8 lanes at a time (both conversions are exact, so the lanes
 * equal the scalar tail's values). */
static void halves_to(float *dst, const uint16_t *src, size_t n, int bf16)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, kc_halves8_to_f32(src + i, bf16));
    for (; i < n; i++)
        dst[i] = bf16 ? from_bf16(src[i]) : kq_f16_to_f32(src[i]);
}

static inline const kv_seq *row_seq(const kvq_rows *rows, int r) { return rows->seqs[rows->per_row ? r : 0]; }

static inline int window_start(const kvq *q, int pos)
{
    int b = pos / q->f.block_size - q->residual_blocks + 1;
    return b > 0 ? b : 0;
}

int kvq_create(kvq **out, const kv_layout *l, const kv_pool *pool, kv_err *err)
{
    *out = NULL;
    if (l->dtype == KV_CACHE_F32)
        return kv_err_set(err, KV_EINVAL, "kv cache: f32 blocks need no staging");
    if (l->head_dim > KVQ_MAX_HEAD_DIM)
        return kv_err_set(err, KV_EUNSUPPORTED, "kv cache: head_dim %d is beyond %d", l->head_dim, KVQ_MAX_HEAD_DIM);
    kvq *q = calloc(1, sizeof *q);
    if (!q)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    q->l = l;
    q->f = (kq_format){l->bits, l->block_size, l->n_kv_heads, l->head_dim, l->group, l->key_mode == KV_KEYS_PER_TOKEN};
    q->r = (kq_regions){l->k, l->k_scales, l->k_zeros, l->v, l->v_scales, l->v_zeros};
    int rc = l->bits ? kq_format_check(&q->f, err) : KV_OK;
    if (rc) {
        free(q);
        return rc;
    }
    q->row = (size_t)l->n_kv_heads * (size_t)l->head_dim;
    q->slot_floats = 2 * (size_t)l->block_size * q->row;
    q->stage_floats = q->slot_floats * (size_t)l->n_slots;
    q->n_blocks = pool->n_blocks;
    q->pool = pool;
    q->residual_blocks = l->residual_blocks > 0 ? l->residual_blocks : 1;
    q->stage_of = malloc((size_t)pool->n_blocks * sizeof *q->stage_of);
    q->sealed = calloc((size_t)pool->n_blocks, 1);
    q->shipped = calloc((size_t)pool->n_blocks, 1);
    if (!q->stage_of || !q->sealed || !q->shipped) {
        kvq_free(q);
        return kv_err_set(err, KV_ENOMEM, "out of memory (staging map of %d blocks)", pool->n_blocks);
    }
    for (int32_t i = 0; i < pool->n_blocks; i++)
        q->stage_of[i] = -1;
    *out = q;
    return KV_OK;
}

void kvq_free(kvq *q)
{
    if (!q)
        return;
    free(q->stage);
    free(q->free_ids);
    free(q->stage_of);
    free(q->sealed);
    free(q->shipped);
    free(q->bptr);
    free(q->fpt);
    free(q);
}

static float *stage_block(const kvq *q, int32_t s) { return q->stage + (size_t)s * q->stage_floats; }
static uint8_t *pool_block(const kv_pool *pool, int32_t block) { return kv_pool_block_addr(pool, block); }

static void stage_drop(kvq *q, int32_t block);

/* Staging left behind by sequences released inside their window: blocks no sequence holds
 * (a new holder restages them: fresh, or from their codes). */
static void stage_reclaim(kvq *q)
{
    for (int32_t b = 0; b < q->n_blocks; b++)
        if (q->stage_of[b] >= 0 && q->pool->refcount[b] == 0)
            stage_drop(q, b);
}

/* A free staging block: a reclaimed one, else the staging area grows. */
static int stage_take(kvq *q, int32_t *out, kv_err *err)
{
    if (q->n_free == 0 && q->cap_stage >= 64)
        stage_reclaim(q);
    if (q->n_free == 0) {
        int32_t cap = q->cap_stage ? 2 * q->cap_stage : 16;
        if (cap > q->n_blocks)
            cap = q->n_blocks;
        if (cap <= q->cap_stage || (size_t)cap > SIZE_MAX / sizeof(float) / q->stage_floats)
            return kv_err_set(err, KV_ENOMEM, "kv cache: no staging block left (%d)", q->cap_stage);
        float *st = realloc(q->stage, (size_t)cap * q->stage_floats * sizeof(float));
        if (st)
            q->stage = st;
        int32_t *fl = realloc(q->free_ids, (size_t)cap * sizeof *fl);
        if (fl)
            q->free_ids = fl;
        if (!st || !fl)
            return kv_err_set(err, KV_ENOMEM, "out of memory (%d KV staging blocks)", cap);
        for (int32_t i = cap - 1; i >= q->cap_stage; i--)
            q->free_ids[q->n_free++] = i;
        q->cap_stage = cap;
    }
    *out = q->free_ids[--q->n_free];
    return KV_OK;
}

static void stage_drop(kvq *q, int32_t block)
{
    if (q->stage_of[block] < 0)
        return;
    q->free_ids[q->n_free++] = q->stage_of[block];
    q->stage_of[block] = -1;
}

/* One slot's staging rows (K then V, slot_floats / 2 apart) into its stored form at dst. */
static void seal_slot(const kvq *q, uint8_t *dst, const float *k)
{
    const kv_layout *l = q->l;
    if (l->bits) {
        kq_quantize_block(dst, &q->f, &q->r, k, k + q->slot_floats / 2, q->row);
        return;
    }
    size_t n = (size_t)l->block_size * q->row;
    halves_from((uint16_t *)(void *)(dst + l->k), k, n, l->dtype == KV_CACHE_BF16);
    halves_from((uint16_t *)(void *)(dst + l->v), k + q->slot_floats / 2, n, l->dtype == KV_CACHE_BF16);
}

/* The values a slot's stored form stands for, into staging rows. */
static void unseal_slot(const kvq *q, const uint8_t *src, float *k)
{
    const kv_layout *l = q->l;
    if (l->bits) {
        kq_dequantize_block(src, &q->f, &q->r, k, k + q->slot_floats / 2, q->row);
        return;
    }
    size_t n = (size_t)l->block_size * q->row;
    halves_to(k, (const uint16_t *)(const void *)(src + l->k), n, l->dtype == KV_CACHE_BF16);
    halves_to(k + q->slot_floats / 2, (const uint16_t *)(const void *)(src + l->v), n, l->dtype == KV_CACHE_BF16);
}

static inline const float *fp_row(const kc_paged_kv *kv, const int32_t *table, int pos)
{
    return kv->pool + (size_t)table[pos / kv->block_size] * kv->block_stride +
           (size_t)(pos % kv->block_size) * (size_t)(kv->n_kv_heads * kv->head_dim);
}

/* kq_attend_one for f16 / bf16 blocks: each sealed row converted to f32 as it is used. */
static void attend_halves(const kvq *q, float *out, const float *qv, int kv_head, const void *const *blocks, int n_qb,
                          const kc_paged_kv *fp, const int32_t *fpt, int fp_start, int n_fp, float *scores)
{
    const kv_layout *l = q->l;
    int hd = l->head_dim, bs = l->block_size, bf = l->dtype == KV_CACHE_BF16, n_q = n_qb * bs;
    size_t head_off = (size_t)kv_head * (size_t)hd;
    float tmp[KVQ_MAX_HEAD_DIM], scale = 1.0f / sqrtf((float)hd), maxv = -INFINITY;
    for (int t = 0; t < n_q; t++) {
        const uint16_t *k = (const uint16_t *)(const void *)((const uint8_t *)blocks[t / bs] + l->k);
        halves_to(tmp, k + (size_t)(t % bs) * q->row + head_off, (size_t)hd, bf);
        scores[t] = kc_dot(qv, tmp, hd) * scale;
        maxv = scores[t] > maxv ? scores[t] : maxv;
    }
    for (int t = 0; t < n_fp; t++) {
        float sc = kc_dot(qv, fp_row(fp, fpt, fp_start + t) + head_off, hd) * scale;
        scores[n_q + t] = sc;
        maxv = sc > maxv ? sc : maxv;
    }
    float sum = 0.0f;
    for (int t = 0; t < n_q + n_fp; t++) {
        scores[t] = expf(scores[t] - maxv);
        sum += scores[t];
    }
    float inv = 1.0f / sum;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int t = 0; t < n_q; t++) {
        const uint16_t *v = (const uint16_t *)(const void *)((const uint8_t *)blocks[t / bs] + l->v);
        halves_to(tmp, v + (size_t)(t % bs) * q->row + head_off, (size_t)hd, bf);
        kc_axpy(out, scores[t] * inv, tmp, hd);
    }
    for (int t = 0; t < n_fp; t++)
        kc_axpy(out, scores[n_q + t] * inv, fp_row(fp, fpt, fp_start + t) + fp->v_offset + head_off, hd);
}

static void attend(const kvq *q, float *out, const float *qv, int kv_head, const void *const *blocks, int n_qb,
                   const kc_paged_kv *fp, const int32_t *fpt, int fp_start, int n_fp, float *scores)
{
    if (q->l->bits)
        kq_attend_one(out, qv, &q->f, &q->r, kv_head, blocks, n_qb, fp, fpt, fp_start, n_fp, scores);
    else
        attend_halves(q, out, qv, kv_head, blocks, n_qb, fp, fpt, fp_start, n_fp, scores);
}

/* The stored values of a sealed block into its staging (every owner layer). */
static void stage_from_codes(kvq *q, const kv_pool *pool, int32_t block)
{
    float *st = stage_block(q, q->stage_of[block]);
    for (int s = 0; s < q->l->n_slots; s++) {
        float *k = st + (size_t)s * q->slot_floats;
        unseal_slot(q, pool_block(pool, block) + (size_t)s * q->l->slot_bytes, k);
    }
}

/* Stages the blocks of one sequence that rows at positions first..last write or read at
 * full precision. */
static int prepare_seq(kvq *q, const kv_pool *pool, const kv_seq *seq, int first, int last, int decode, kv_err *err)
{
    int bs = q->f.block_size;
    for (int b = window_start(q, first); b <= last / bs; b++) {
        int32_t id = seq->blocks[b];
        int fresh = b * bs >= first; /* its token 0 is written now: a new block for this sequence */
        if (q->shipped[id]) {
            q->shipped[id] = 0;
            if (decode && !fresh && q->stage_of[id] >= 0) {
                stage_from_codes(q, pool, id); /* what a decode worker receiving it stages */
                continue;
            }
        }
        if (q->stage_of[id] < 0) {
            int rc = stage_take(q, &q->stage_of[id], err);
            if (rc)
                return rc;
            if (!fresh && q->sealed[id]) {
                stage_from_codes(q, pool, id);
                continue;
            }
            fresh = 1; /* neither written here nor stored: start from zeros */
        }
        if (fresh) {
            memset(stage_block(q, q->stage_of[id]), 0, q->stage_floats * sizeof(float));
            q->sealed[id] = 0;
        }
    }
    return KV_OK;
}

int kvq_prepare(kvq *q, const kv_pool *pool, const kvq_rows *rows, kv_err *err)
{
    for (int r0 = 0; r0 < rows->n;) {
        int r1 = r0 + 1;
        while (r1 < rows->n && row_seq(rows, r1) == row_seq(rows, r0))
            r1++;
        int rc = prepare_seq(q, pool, row_seq(rows, r0), rows->pos[r0], rows->pos[r1 - 1], rows->per_row, err);
        if (rc)
            return rc;
        r0 = r1;
    }
    return KV_OK;
}

float *kvq_row(kvq *q, const int32_t *table, int pos, int layer, size_t *v_offset)
{
    int bs = q->f.block_size;
    *v_offset = q->slot_floats / 2;
    return stage_block(q, q->stage_of[table[pos / bs]]) + (size_t)q->l->slot_of[layer] * q->slot_floats +
           (size_t)(pos % bs) * q->row;
}

void kvq_seal_layer(kvq *q, kv_pool *pool, const kvq_rows *rows, int layer)
{
    const kv_layout *l = q->l;
    if (!kv_layout_is_owner(l, layer))
        return;
    int bs = q->f.block_size, slot = l->slot_of[layer], last_slot = slot == l->n_slots - 1;
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < rows->n; r++) {
        int pos = rows->pos[r];
        if ((pos + 1) % bs)
            continue;
        int32_t id = row_seq(rows, r)->blocks[pos / bs];
        const float *k = stage_block(q, q->stage_of[id]) + (size_t)slot * q->slot_floats;
        seal_slot(q, pool_block(pool, id) + (size_t)slot * l->slot_bytes, k);
        if (last_slot)
            q->sealed[id] = 1;
    }
}

/* Room for n tables of nb entries. */
static int tables_ensure(kvq *q, size_t n, size_t nb)
{
    if (n * nb <= q->tab_cap)
        return 0;
    const void **bp = realloc(q->bptr, n * nb * sizeof *bp);
    if (bp)
        q->bptr = bp;
    int32_t *fp = realloc(q->fpt, n * nb * sizeof *fp);
    if (fp)
        q->fpt = fp;
    if (!bp || !fp)
        return -1;
    q->tab_cap = n * nb;
    return 0;
}

/* Table i: the layer's base in each of seq's blocks 0 .. n_blocks - 1, and their staging. */
static void fill_tables(kvq *q, const kv_pool *pool, size_t i, size_t nb, const kv_seq *seq, int n_blocks, int layer)
{
    size_t off = kv_layout_slot_offset(q->l, layer);
    for (int b = 0; b < n_blocks; b++) {
        q->bptr[i * nb + (size_t)b] = pool_block(pool, seq->blocks[b]) + off;
        q->fpt[i * nb + (size_t)b] = q->stage_of[seq->blocks[b]];
    }
}

static kc_paged_kv stage_kv(const kvq *q, int layer)
{
    kc_paged_kv kv = {q->stage + (size_t)q->l->slot_of[layer] * q->slot_floats, q->stage_floats, q->slot_floats / 2,
                      q->f.block_size, q->f.n_kv_heads, q->f.head_dim};
    return kv;
}

static void poison(float *out, int n)
{
    for (int d = 0; d < n; d++)
        out[d] = NAN; /* allocation failed: poison, never garbage */
}

void kvq_attention_prefill(kvq *q, const kv_pool *pool, float *out, const float *qv, const kv_seq *seq, int start,
                           int n, int n_heads, int layer)
{
    int bs = q->f.block_size, hd = q->f.head_dim, group = n_heads / q->f.n_kv_heads;
    int nb = (start + n - 1) / bs + 1;
    int ok = tables_ensure(q, 1, (size_t)nb) == 0;
    if (ok)
        fill_tables(q, pool, 0, (size_t)nb, seq, nb, layer);
    kc_paged_kv fp = stage_kv(q, layer);
#pragma omp parallel
    {
        float *scores = malloc((size_t)nb * (size_t)bs * sizeof(float));
#pragma omp for schedule(dynamic, 4)
        for (int p = 0; p < n * n_heads; p++) {
            int i = p / n_heads, h = p % n_heads, pos = start + i, ws = window_start(q, pos);
            size_t off = ((size_t)i * (size_t)n_heads + (size_t)h) * (size_t)hd;
            if (scores && ok)
                attend(q, out + off, qv + off, h / group, q->bptr, ws, &fp, q->fpt, ws * bs,
                              pos + 1 - ws * bs, scores);
            else
                poison(out + off, hd);
        }
        free(scores);
    }
}

void kvq_attention_decode(kvq *q, const kv_pool *pool, float *out, const float *qv, const kvq_rows *rows,
                          int n_heads, int layer)
{
    const int32_t *pos = rows->pos;
    int n_seqs = rows->n;
    int bs = q->f.block_size, hd = q->f.head_dim, group = n_heads / q->f.n_kv_heads;
    int nb = 1;
    for (int s = 0; s < n_seqs; s++)
        if (pos[s] / bs + 1 > nb)
            nb = pos[s] / bs + 1;
    int ok = tables_ensure(q, (size_t)n_seqs, (size_t)nb) == 0;
    for (int s = 0; ok && s < n_seqs; s++)
        fill_tables(q, pool, (size_t)s, (size_t)nb, row_seq(rows, s), pos[s] / bs + 1, layer);
    kc_paged_kv fp = stage_kv(q, layer);
#pragma omp parallel
    {
        float *scores = malloc((size_t)nb * (size_t)bs * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < n_seqs * n_heads; p++) {
            int s = p / n_heads, h = p % n_heads, ws = window_start(q, pos[s]);
            size_t off = ((size_t)s * (size_t)n_heads + (size_t)h) * (size_t)hd;
            size_t t = (size_t)s * (size_t)nb;
            if (scores && ok)
                attend(q, out + off, qv + off, h / group, q->bptr + t, ws, &fp, q->fpt + t, ws * bs,
                              pos[s] + 1 - ws * bs, scores);
            else
                poison(out + off, hd);
        }
        free(scores);
    }
}

/* The stored image of an unsealed block: its staging quantized into the pool (unwritten rows
 * are zeros), so that the pool's bytes of every written block are what ships. */
static void store_partial(kvq *q, const kv_pool *pool, int32_t block)
{
    const kv_layout *l = q->l;
    const float *st = stage_block(q, q->stage_of[block]);
    for (int s = 0; s < l->n_slots; s++) {
        const float *k = st + (size_t)s * q->slot_floats;
        seal_slot(q, pool_block(pool, block) + (size_t)s * l->slot_bytes, k);
    }
}

void kvq_finish(kvq *q, const kv_pool *pool, const kvq_rows *rows)
{
    if (!rows->per_row && rows->n > 0) { /* after a prefill: its last block may ship as it is */
        int last = rows->pos[rows->n - 1];
        int32_t id = rows->seqs[0]->blocks[last / q->f.block_size];
        if ((last + 1) % q->f.block_size && q->stage_of[id] >= 0) {
            store_partial(q, pool, id);
            q->shipped[id] = 1;
        }
    }
    for (int r0 = 0; r0 < rows->n;) {
        int r1 = r0 + 1;
        while (r1 < rows->n && row_seq(rows, r1) == row_seq(rows, r0))
            r1++;
        int end = window_start(q, rows->pos[r1 - 1] + 1);
        for (int b = window_start(q, rows->pos[r0]); b < end; b++)
            stage_drop(q, row_seq(rows, r0)->blocks[b]);
        r0 = r1;
    }
}

void kvq_block_read(kvq *q, const kv_pool *pool, int32_t block, void *dst)
{
    if (!q->sealed[block] && q->stage_of[block] >= 0)
        store_partial(q, pool, block);
    memcpy(dst, pool_block(pool, block), q->l->block_bytes);
}

void kvq_block_write(kvq *q, kv_pool *pool, int32_t block, const void *src)
{
    memcpy(pool_block(pool, block), src, q->l->block_bytes);
    q->sealed[block] = 1;
    q->shipped[block] = 0;
    stage_drop(q, block);
}
