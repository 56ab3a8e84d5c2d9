/* SmolLM2-135M-Instruct served from its Q4_1 GGUF directly (Q4_1 matrices, Q8_0 embedding,
 * both mmapped; Q/K rows put back in HF order by a row copy) against the same model imported
 * to f32 (`kvctl model import`'s code) and loaded with each matrix requantized to the type it
 * has in the GGUF (kv_model_load_options.types_like):
 *   - the requantized blocks equal the GGUF's, byte for byte (every matrix);
 *   - prefill logits of every reference prompt are bit-identical, and greedy ids equal;
 *   - both stay within a bound of the f32 model's logits (printed: how far, and how many
 *     greedy tokens the quantized model shares with the f64 reference in greedy.json);
 *   - the GGUF and its import have the same config and kv_model_fingerprint.
 * usage: test_weights_gguf GREEDY_JSON WORK_DIR [quick] (the f32 import is made once in
 * WORK_DIR; quick, for sanitizer builds: the first case and 8 tokens).
 * Skipped without the shared models. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu_kernels.h"
#include "engine.h"
#include "gguf_import.h"
#include "json.h"
#include "kv_file.h"
#include "kv_test.h"
#include "model.h"

#define MAX_CASES 4
#define N_GEN 24

static int n_gen = N_GEN;

typedef struct ref_case {
    int32_t prompt[256];
    int n_prompt;
    int32_t gen[128];
    int n_gen;
} ref_case;

static int read_ints(const json_value *arr, int32_t *out, int cap)
{
    if (!arr || arr->type != JSON_ARRAY)
        return 0;
    int n = 0;
    for (size_t i = 0; i < arr->u.arr.n && n < cap; i++)
        out[n++] = (int32_t)arr->u.arr.items[i].u.number;
    return n;
}

static int load_cases(const char *path, ref_case *cases)
{
    char *text;
    size_t len;
    kv_err err;
    if (kv_file_read_all(path, &text, &len, &err))
        return 0;
    json_doc *doc = json_parse(text, len, &err);
    free(text);
    if (!doc)
        return 0;
    const json_value *arr = json_get(json_root(doc), "cases");
    int n = 0;
    for (size_t i = 0; arr && arr->type == JSON_ARRAY && i < arr->u.arr.n && n < MAX_CASES; i++) {
        const json_value *c = &arr->u.arr.items[i];
        cases[n].n_prompt = read_ints(json_get(c, "prompt_ids"), cases[n].prompt, 256);
        cases[n].n_gen = read_ints(json_get(c, "generated_ids"), cases[n].gen, 128);
        n += cases[n].n_prompt > 0;
    }
    json_doc_free(doc);
    return n;
}

/* Last-position logits of the prompt, then N_GEN greedy ids. */
static int run(const kv_model *m, const ref_case *rc_, float *logits, int32_t *ids)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 2;
    o.n_blocks = 64;
    kv_engine *e;
    kv_err err;
    int rc = kv_engine_create(m, &o, &e, &err);
    CHECK_MSG(rc == 0, "engine: %s", err.msg);
    if (rc)
        return rc;
    const int V = m->cfg.vocab_size;
    kv_seq seq = {0};
    float *row = malloc(sizeof(float) * (size_t)V);
    rc = kv_engine_prefill(e, &seq, rc_->prompt, rc_->n_prompt, logits, 0, &err);
    int32_t next = kc_argmax(logits, V);
    for (int i = 0; !rc && i < n_gen; i++) {
        ids[i] = next;
        rc = kv_engine_decode(e, (kv_seq *const[]){&seq}, &next, 1, row, &err);
        next = kc_argmax(row, V);
    }
    CHECK_MSG(rc == 0, "generate: %s", err.msg);
    free(row);
    kv_seq_release(&seq, kv_engine_pool(e));
    kv_engine_free(e);
    return rc;
}

static int same_weight(const kv_weight *a, const kv_weight *b)
{
    return a->type == b->type && a->rows == b->rows && a->cols == b->cols && a->row_bytes == b->row_bytes &&
           !memcmp(a->data, b->data, kv_weight_bytes(a));
}

static void compare_bytes(const kv_model *g, const kv_model *r)
{
    int differ = 0, n = 0;
    for (int l = 0; l < g->cfg.n_layers; l++) {
        const kv_layer_weights *a = &g->layers[l], *b = &r->layers[l];
        const kv_weight *pa[7] = {&a->wq, &a->wk, &a->wv, &a->wo, &a->w_gate, &a->w_up, &a->w_down};
        const kv_weight *pb[7] = {&b->wq, &b->wk, &b->wv, &b->wo, &b->w_gate, &b->w_up, &b->w_down};
        for (int k = 0; k < 7; k++, n++)
            if (!same_weight(pa[k], pb[k])) {
                if (differ++ < 4)
                    fprintf(stderr, "layer %d matrix %d: requantized bytes differ from the GGUF's\n", l, k);
            }
    }
    differ += !same_weight(&g->embed, &r->embed);
    CHECK_MSG(differ == 0, "%d of %d matrices differ between the GGUF and its f32 import requantized", differ, n + 1);
    CHECK(!strcmp(g->weight_types, r->weight_types));
    CHECK_MSG(g->layers[0].wq.type == KV_TYPE_Q4_1 && g->embed.type == KV_TYPE_Q8_0, "GGUF types %s", g->weight_types);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_weights_gguf GREEDY_JSON WORK_DIR\n");
        return 2;
    }
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared models not found (set KVSERVE_TEST_MODELS)");
    char gguf[4096], f32dir[4096];
    snprintf(gguf, sizeof gguf, "%s/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf", models);
    if (access(gguf, R_OK))
        KV_TEST_SKIP("%s not found", gguf);
    static ref_case cases[MAX_CASES];
    int n_cases = load_cases(argv[1], cases);
    if (argc > 3 && !strcmp(argv[3], "quick")) {
        n_cases = n_cases > 1 ? 1 : n_cases;
        n_gen = 8;
    }
    CHECK_MSG(n_cases > 0, "no cases in %s", argv[1]);
    mkdir(argv[2], 0755);
    snprintf(f32dir, sizeof f32dir, "%s/smollm2-f32-weights", argv[2]);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", f32dir);
    kv_err err;
    if (access(cfg, R_OK)) {
        kv_gguf_import_options io = {.gguf_path = gguf, .out_dir = f32dir, .dtype = KV_DTYPE_F32, .force = 1};
        int rc = kv_gguf_import(&io, &err);
        CHECK_MSG(rc == 0, "import: %s", err.msg);
        if (rc)
            return kv_test_result();
    }
    kv_model *g = NULL, *f = NULL, *r = NULL;
    int rc = kv_model_load(gguf, &g, &err);
    CHECK_MSG(rc == 0, "GGUF direct: %s", err.msg);
    if (!rc && (rc = kv_model_load(f32dir, &f, &err)))
        CHECK_MSG(0, "f32 import: %s", err.msg);
    kv_model_load_options lo;
    kv_model_load_options_default(&lo);
    lo.types_like = g;
    if (!rc && (rc = kv_model_load_opts(f32dir, &lo, &r, &err)))
        CHECK_MSG(0, "f32 import requantized: %s", err.msg);
    if (rc) {
        kv_model_free(g);
        kv_model_free(f);
        return kv_test_result();
    }
    CHECK(!memcmp(&g->cfg, &f->cfg, sizeof g->cfg));
    /* Workers on the GGUF and a router on its import belong to one cluster. */
    char fp_g[9] = "", fp_f[9] = "";
    CHECK(kv_model_fingerprint(gguf, fp_g, &err) == KV_OK && kv_model_fingerprint(f32dir, fp_f, &err) == KV_OK);
    CHECK_MSG(!strcmp(fp_g, fp_f), "fingerprints %s (GGUF) and %s (import) differ", fp_g, fp_f);
    compare_bytes(g, r);
    const int V = g->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)V), *lr = malloc(sizeof(float) * (size_t)V);
    float *lf = malloc(sizeof(float) * (size_t)V);
    for (int c = 0; c < n_cases; c++) {
        int32_t ig[N_GEN], ir[N_GEN], i_f[N_GEN];
        if (run(g, &cases[c], lg, ig) || run(r, &cases[c], lr, ir) || run(f, &cases[c], lf, i_f))
            break;
        CHECK_MSG(!memcmp(lg, lr, sizeof(float) * (size_t)V), "case %d: GGUF-direct and requantized logits differ", c);
        CHECK_MSG(!memcmp(ig, ir, sizeof(int32_t) * (size_t)n_gen), "case %d: GGUF-direct and requantized greedy ids differ", c);
        double maxerr = 0, scale = 0;
        for (int i = 0; i < V; i++) {
            maxerr = fmax(maxerr, isfinite(lg[i]) ? fabs(lg[i] - lf[i]) : INFINITY);
            scale = fmax(scale, fabs(lf[i]));
        }
        int same_f = 0, same_ref = 0;
        while (same_f < n_gen && ig[same_f] == i_f[same_f])
            same_f++;
        while (same_ref < n_gen && same_ref < cases[c].n_gen && ig[same_ref] == cases[c].gen[same_ref])
            same_ref++;
        int f_ref = 0;
        while (f_ref < n_gen && f_ref < cases[c].n_gen && i_f[f_ref] == cases[c].gen[f_ref])
            f_ref++;
        fprintf(stderr,
                "case %d: |logit - f32| max %.3f (max |logit| %.1f); greedy: quantized = f32 for %d/%d, quantized = "
                "reference for %d, f32 = reference for %d\n",
                c, maxerr, scale, same_f, n_gen, same_ref, f_ref);
        /* The activations are int8 in the quantized GEMV (llama.cpp's q8_1 equivalent): a
         * tenth of the logit range bounds it with room; a wrong layout gives order 1. */
        CHECK_MSG(maxerr <= 0.1 * scale, "case %d: GGUF logits off the f32 model's by %.3f", c, maxerr);
        CHECK_MSG(f_ref == (cases[c].n_gen < n_gen ? cases[c].n_gen : n_gen), "case %d: f32 greedy leaves the reference at %d", c,
                  f_ref);
    }
    free(lg);
    free(lr);
    free(lf);
    kv_model_free(r);
    kv_model_free(f);
    kv_model_free(g);
    return kv_test_result();
}
