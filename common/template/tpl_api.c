/* kv_template_compile / kv_template_render: the entry points that own an arena and catch the
 * errors unwound from inside the interpreter. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

#define TEMPLATE_NAME "chat_template"

struct kv_template {
    tpl_arena arena; /* the source, tokens and AST; never written after compiling */
    tnode_list body;
    kv_template_limits limits;
};

kv_template_limits kv_template_default_limits(void)
{
    return (kv_template_limits){
        .max_output = 1u << 20,
        .max_string = 1u << 20,
        .max_iterations = 1000000,
        .max_depth = 64,
        .max_memory = 64u << 20,
    };
}

static kv_template_limits checked_limits(const kv_template_limits *l)
{
    kv_template_limits d = kv_template_default_limits();
    if (!l)
        return d;
    kv_template_limits r = *l;
    if (!r.max_output)
        r.max_output = d.max_output;
    if (!r.max_string)
        r.max_string = d.max_string;
    if (!r.max_iterations)
        r.max_iterations = d.max_iterations;
    if (r.max_depth <= 0)
        r.max_depth = d.max_depth;
    if (!r.max_memory)
        r.max_memory = d.max_memory;
    /* the evaluator recurses once per nesting level: keep the C stack safe whatever asked */
    if (r.max_depth > 256)
        r.max_depth = 256;
    return r;
}

static int compile_in(tpl_fail_ctx *fc, kv_template *t, const char *src, size_t len)
{
    if (setjmp(fc->jb))
        return -1;
    size_t n;
    char *norm = tpl_normalize_source(&t->arena, src, len, &n);
    tok_array toks = {0};
    tpl_lex(&t->arena, fc, norm, n, &toks);
    tpl_parse(&t->arena, fc, &toks, t->limits.max_depth, &t->body);
    return 0;
}

int kv_template_compile(const char *src, size_t len, const kv_template_limits *limits, kv_template **out, kv_err *err)
{
    *out = NULL;
    if (!src && len)
        return kv_err_set(err, KV_EINVAL, "kv_template_compile: no source");
    size_t bad = src ? kv_utf8_invalid_at(src, len) : 0;
    if (src && bad < len) /* a template is text: jinja2 never sees bytes that are not UTF-8 */
        return kv_err_set(err, KV_EFORMAT, TEMPLATE_NAME ":0:0: the source is not UTF-8 (byte %zu)", bad);
    kv_template *t = calloc(1, sizeof *t);
    if (!t)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    t->limits = checked_limits(limits);
    kv_err local = {0};
    tpl_fail_ctx fc = {.err = err ? err : &local, .name = TEMPLATE_NAME, .line = 1, .col = 1};
    tpl_arena_init(&t->arena, t->limits.max_memory, &fc);
    if (compile_in(&fc, t, src ? src : "", len)) {
        int code = fc.err->code;
        kv_template_free(t);
        return code;
    }
    t->arena.fc = NULL; /* a compiled template allocates no more */
    *out = t;
    return KV_OK;
}

void kv_template_free(kv_template *t)
{
    if (!t)
        return;
    tpl_arena_free(&t->arena);
    free(t);
}

typedef struct render_job {
    const kv_template *t;
    const kv_template_render_opts *opts;
    char *result;
    size_t result_len;
} render_job;

static int render_in(tpl_fail_ctx *fc, tpl_arena *ar, render_job *job)
{
    if (setjmp(fc->jb))
        return -1;
    tpl_rt rt = {.ar = ar, .fc = fc, .lim = &job->t->limits, .now = job->opts ? job->opts->fixed_now : 0};
    tscope *globals = tpl_scope_new(&rt, NULL);
    tpl_install_globals(&rt, globals);
    tscope *vars = tpl_scope_new(&rt, globals);
    if (job->opts)
        for (size_t i = 0; i < job->opts->n_vars; i++) {
            const kv_template_var *v = &job->opts->vars[i];
            if (!v->name)
                continue;
            tpl_scope_set(&rt, vars, tpl_strdup(ar, v->name, strlen(v->name)),
                          v->value ? tpl_from_json(&rt, v->value) : tv_none());
        }
    tpl_out out;
    tpl_out_init(&out, job->t->limits.max_output);
    out.what = "output";
    rt.out = &out;
    int flow = 0;
    tpl_exec_body(&rt, tpl_scope_new(&rt, vars), &job->t->body, &flow);
    job->result = malloc(out.n + 1);
    if (!job->result)
        tpl_fail_at(fc, KV_ENOMEM, fc->line, fc->col, "out of memory");
    if (out.n)
        memcpy(job->result, out.p, out.n);
    job->result[out.n] = '\0';
    job->result_len = out.n;
    return 0;
}

int kv_template_render(const kv_template *t, const kv_template_render_opts *opts, char **out, size_t *out_len,
                       kv_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    kv_err local = {0};
    tpl_fail_ctx fc = {.err = err ? err : &local, .name = TEMPLATE_NAME, .line = 1, .col = 1};
    tpl_arena ar;
    tpl_arena_init(&ar, t->limits.max_memory, &fc);
    render_job job = {.t = t, .opts = opts};
    int rc = render_in(&fc, &ar, &job);
    tpl_arena_free(&ar);
    if (rc)
        return fc.err->code;
    *out = job.result;
    if (out_len)
        *out_len = job.result_len;
    return KV_OK;
}
