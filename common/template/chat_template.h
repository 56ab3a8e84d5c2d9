/* Chat templates: a sandboxed Jinja interpreter that renders a model's `chat_template` as
 * Hugging Face transformers' apply_chat_template does (jinja2's ImmutableSandboxedEnvironment
 * with trim_blocks, lstrip_blocks, loop controls and the {% generation %} block; globals
 * raise_exception, strftime_now, namespace, dict, range; tojson as json.dumps(ensure_ascii=False)).
 *
 * Promises:
 *   - Output is byte for byte what jinja2 renders, for the constructs listed in
 *     common/template/README.md; others are refused with an error (the README lists the few
 *     known differences that are not).
 *   - Bounded: output size, string sizes, loop iterations, call and nesting depth and the
 *     memory one render may use are capped (kv_template_limits); hitting a cap is an error.
 *   - Every error names where it happened: "chat_template:LINE:COL: message". A template's own
 *     raise_exception(msg) gives code KV_EINVAL and its message verbatim after that prefix;
 *     a cap hit gives KV_ERANGE; a syntax error KV_EFORMAT; other runtime errors KV_EINVAL.
 *   - A compiled template is immutable: render it from any number of threads at once.
 *   - The template only reads its inputs: list.append, dict.update and the like raise a
 *     SecurityError as in jinja2's immutable sandbox. */
#ifndef KV_CHAT_TEMPLATE_H
#define KV_CHAT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "kv_err.h"

typedef struct kv_template_limits {
    size_t max_output;        /* bytes of rendered text (default 1 MiB) */
    size_t max_string;        /* bytes of any one string made while rendering (default 1 MiB) */
    uint64_t max_iterations;  /* loop iterations and per-item filter steps, all told (default 1M) */
    int max_depth;            /* macro calls, nested blocks and expressions (default 64) */
    size_t max_memory;        /* bytes one render (or compile) may allocate (default 64 MiB) */
} kv_template_limits;

/* The defaults above. */
kv_template_limits kv_template_default_limits(void);

/* ---- low level: compile a source, render it with variables ---- */

typedef struct kv_template kv_template;

/* Compiles src[0..len) (UTF-8). limits may be NULL (defaults); they are kept for rendering. */
int kv_template_compile(const char *src, size_t len, const kv_template_limits *limits, kv_template **out,
                        kv_err *err);
void kv_template_free(kv_template *t);

typedef struct kv_template_var {
    const char *name;
    const json_value *value; /* JSON null is Python None; integral numbers within 2^53 are ints */
} kv_template_var;

typedef struct kv_template_render_opts {
    const kv_template_var *vars;
    size_t n_vars;
    /* strftime_now's clock: 0 uses the real local time; otherwise this Unix time (UTC). */
    int64_t fixed_now;
} kv_template_render_opts;

/* Renders into a malloc'd, NUL-terminated *out of *out_len bytes (free() it). */
int kv_template_render(const kv_template *t, const kv_template_render_opts *opts, char **out, size_t *out_len,
                       kv_err *err);

/* ---- high level: a model's template, as apply_chat_template renders it ---- */

typedef struct kv_chat_template kv_chat_template;

/* Reads DIR/tokenizer_config.json: `chat_template` (a string, or a list of {name, template}
 * of which "default" is used, "tool_use" when tools are given) and the special token strings
 * (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token; a string or an
 * AddedToken object's content). KV_ENOTFOUND when the model has no chat template. */
int kv_chat_template_load(const char *model_dir, const kv_template_limits *limits, kv_chat_template **out,
                          kv_err *err);
/* The same from a tokenizer_config.json already parsed (root object). */
int kv_chat_template_from_config(const json_value *config, const kv_template_limits *limits,
                                 kv_chat_template **out, kv_err *err);
void kv_chat_template_free(kv_chat_template *ct);

typedef struct kv_chat_render_opts {
    const json_value *tools;           /* array, or NULL: the template sees None */
    const json_value *documents;       /* array, or NULL */
    int add_generation_prompt;
    const kv_template_var *extra;      /* extra keyword arguments (override special tokens) */
    size_t n_extra;
    int64_t fixed_now;                 /* as in kv_template_render_opts */
} kv_chat_render_opts;

/* Renders messages (a JSON array of message objects). As transformers does, keys whose value
 * is null are dropped from each message, and reasoning_content / thinking / reasoning are
 * aliased to one another. opts may be NULL. */
int kv_chat_template_render(const kv_chat_template *ct, const json_value *messages, const kv_chat_render_opts *opts,
                            char **out, size_t *out_len, kv_err *err);

#endif
