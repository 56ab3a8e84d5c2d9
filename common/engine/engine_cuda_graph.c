/* CUDA graphs of the decode step. A step is ~10 launches per layer (GEMMs, norms, RoPE, KV
 * write, attention): at small batches their launch gaps cost as much as the work. Each
 * (batch bucket, split count) pair gets one graph, captured the first time it is needed:
 * the step's inputs (tokens, positions, lengths, block tables) live in fixed device
 * buffers that the graph reads in place, padding rows (position -1, length 0) fill a batch
 * up to its bucket, and every launch parameter left (rows, splits) is in the key. A failed
 * capture turns graphs off for this engine (with a warning) and the step runs as plain
 * launches; KVSERVE_CUDA_GRAPHS=0 turns them off from the start. */
#include "engine_cuda.h"
#include "kv_log.h"

int cu_bucket_of(int n)
{
    for (int b = 0; b < CU_GRAPH_BUCKETS; b++)
        if (n <= 1 << b)
            return b;
    return -1;
}

static int split_class(int n_splits)
{
    int k = 0;
    while ((1 << k) < n_splits && k + 1 < CU_SPLIT_CLASSES)
        k++;
    return k;
}

void cu_graphs_clear(cu_engine *c)
{
    for (int b = 0; b < CU_GRAPH_BUCKETS; b++)
        for (int k = 0; k < CU_SPLIT_CLASSES; k++)
            if (c->graphs[b][k]) {
                cudaGraphExecDestroy(c->graphs[b][k]);
                c->graphs[b][k] = NULL;
            }
}

/* Records the step into a graph without running it. Returns 0 and *out, or nonzero with the
 * reason in why (the stream is out of capture mode either way). */
static int capture(kv_engine *e, const cu_step *st, cudaGraphExec_t *out, kv_err *why)
{
    cu_engine *c = cu_of(e);
    cudaGraph_t g = NULL;
    *out = NULL;
    cudaError_t ce = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (ce != cudaSuccess)
        return cu_fail(why, ce, "cudaStreamBeginCapture", __FILE__, __LINE__);
    int rc = cu_forward(e, st, why);
    ce = cudaStreamEndCapture(c->stream, &g); /* always: leaves capture mode */
    if (rc || ce != cudaSuccess || !g) {
        if (g)
            cudaGraphDestroy(g);
        if (!rc)
            rc = cu_fail(why, ce != cudaSuccess ? ce : cudaErrorUnknown, "cudaStreamEndCapture", __FILE__, __LINE__);
        (void)cudaGetLastError();
        return rc;
    }
    ce = cudaGraphInstantiate(out, g, 0);
    cudaGraphDestroy(g);
    if (ce != cudaSuccess) {
        *out = NULL;
        return cu_fail(why, ce, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    return KV_OK;
}

int cu_graph_run(kv_engine *e, const cu_step *st, kv_err *err)
{
    cu_engine *c = cu_of(e);
    int b = cu_bucket_of(st->rows);
    if (!c->graphs_on || b < 0 || st->rows != 1 << b)
        return 0;
    cudaGraphExec_t *slot = &c->graphs[b][split_class(st->n_splits)];
    if (!*slot) {
        kv_err why;
        if (capture(e, st, slot, &why)) {
            /* A capture can fail for reasons outside this engine (a library that allocates
             * while capturing, a driver without graph support): plain launches still work. */
            c->graphs_on = 0;
            cu_graphs_clear(c);
            KV_WARN("engine", "msg=\"cuda graph capture failed: decode runs without graphs\" rows=%d splits=%d err=\"%s\"",
                    st->rows, st->n_splits, why.msg);
            /* A sticky error (a fault) is not a capture problem: report it. */
            cudaError_t ce = cudaStreamQuery(c->stream);
            if (ce != cudaSuccess && ce != cudaErrorNotReady)
                return cu_fail(err, ce, "cudaStreamQuery (after a failed capture)", __FILE__, __LINE__);
            (void)cudaGetLastError(); /* NotReady is no error for the next launch's check */
            return 0;
        }
    }
    CU_CHECK(cudaGraphLaunch(*slot, c->stream));
    return 1;
}
