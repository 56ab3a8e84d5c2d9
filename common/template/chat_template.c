/* A model's chat template as apply_chat_template renders it: which template (tokenizer_config's
 * chat_template, a named list's "default" or "tool_use", or chat_template.jinja beside it), the
 * special token strings, and the messages normalized as transformers normalizes them. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "chat_template.h"
#include "kv_file.h"

static const char *const special_names[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                            "pad_token", "cls_token", "mask_token"};
#define N_SPECIAL (sizeof special_names / sizeof *special_names)

struct kv_chat_template {
    kv_template *main, *tool_use; /* tool_use: a named "tool_use" template, used when tools are given */
    char *special[N_SPECIAL];     /* NULL where the config has none */
    size_t special_len[N_SPECIAL];
};

void kv_chat_template_free(kv_chat_template *ct)
{
    if (!ct)
        return;
    kv_template_free(ct->main);
    kv_template_free(ct->tool_use);
    for (size_t i = 0; i < N_SPECIAL; i++)
        free(ct->special[i]);
    free(ct);
}

/* A special token: a string, or an AddedToken object's "content". */
static const json_value *token_string(const json_value *v)
{
    if (v && v->type == JSON_OBJECT)
        v = json_get(v, "content");
    return v && v->type == JSON_STRING ? v : NULL;
}

static int take_specials(kv_chat_template *ct, const json_value *config, kv_err *err)
{
    for (size_t i = 0; i < N_SPECIAL; i++) {
        const json_value *s = token_string(json_get(config, special_names[i]));
        if (!s || ct->special[i])
            continue;
        ct->special[i] = malloc(s->u.str.len + 1);
        if (!ct->special[i])
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        memcpy(ct->special[i], s->u.str.s, s->u.str.len + 1);
        ct->special_len[i] = s->u.str.len;
    }
    return KV_OK;
}

static int compile_named(const json_value *src, const char *what, const kv_template_limits *limits, kv_template **out,
                         kv_err *err)
{
    if (!src || src->type != JSON_STRING)
        return kv_err_set(err, KV_EFORMAT, "chat_template: %s is not a string", what);
    int rc = kv_template_compile(src->u.str.s, src->u.str.len, limits, out, err);
    if (rc && strcmp(what, "chat_template"))
        kv_err_wrap(err, "%s", what);
    return rc;
}

int kv_chat_template_from_config(const json_value *config, const kv_template_limits *limits, kv_chat_template **out,
                                 kv_err *err)
{
    *out = NULL;
    if (!config || config->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "tokenizer_config.json: not a JSON object");
    const json_value *tpl = json_get(config, "chat_template");
    if (!tpl || tpl->type == JSON_NULL)
        return kv_err_set(err, KV_ENOTFOUND, "the model has no chat template (no chat_template in tokenizer_config.json)");
    kv_chat_template *ct = calloc(1, sizeof *ct);
    if (!ct)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    int rc = KV_OK;
    if (tpl->type == JSON_STRING) {
        rc = compile_named(tpl, "chat_template", limits, &ct->main, err);
    } else if (tpl->type == JSON_ARRAY) {
        for (size_t i = 0; i < tpl->u.arr.n && !rc; i++) {
            const json_value *e = &tpl->u.arr.items[i];
            const char *name = json_get_string(e, "name");
            if (!name) {
                rc = kv_err_set(err, KV_EFORMAT, "chat_template[%zu]: no name", i);
            } else if (!strcmp(name, "default") && !ct->main) {
                rc = compile_named(json_get(e, "template"), "chat_template 'default'", limits, &ct->main, err);
            } else if (!strcmp(name, "tool_use") && !ct->tool_use) {
                rc = compile_named(json_get(e, "template"), "chat_template 'tool_use'", limits, &ct->tool_use, err);
            }
        }
        if (!rc && !ct->main)
            rc = kv_err_set(err, KV_ENOTFOUND, "the model has several chat templates and none named 'default'");
    } else {
        rc = kv_err_set(err, KV_EFORMAT, "tokenizer_config.json: chat_template is a %s", json_type_name(tpl->type));
    }
    if (!rc)
        rc = take_specials(ct, config, err);
    if (rc) {
        kv_chat_template_free(ct);
        return rc;
    }
    *out = ct;
    return KV_OK;
}

static int read_json(const char *dir, const char *name, char **text, json_doc **doc, kv_err *err)
{
    char path[4096];
    size_t len;
    *doc = NULL;
    *text = NULL;
    if (kv_path_join(path, sizeof path, dir, name, err))
        return err ? err->code : KV_EINVAL;
    if (kv_file_read_all(path, text, &len, err))
        return err ? err->code : KV_EIO;
    *doc = json_parse(*text, len, err);
    if (!*doc) {
        kv_err_wrap(err, "%s", path);
        free(*text);
        *text = NULL;
        return err ? err->code : KV_EFORMAT;
    }
    return KV_OK;
}

int kv_chat_template_load(const char *model_dir, const kv_template_limits *limits, kv_chat_template **out, kv_err *err)
{
    *out = NULL;
    char *text;
    json_doc *doc;
    int rc = read_json(model_dir, "tokenizer_config.json", &text, &doc, err);
    if (rc)
        return rc;
    const json_value *config = json_root(doc);
    rc = kv_chat_template_from_config(config, limits, out, err);
    if (rc == KV_ENOTFOUND && config->type == JSON_OBJECT && !json_get(config, "chat_template")) {
        /* newer transformers save the template beside the config */
        char path[4096], *src;
        size_t len;
        kv_err ferr = {0};
        if (!kv_path_join(path, sizeof path, model_dir, "chat_template.jinja", &ferr) &&
            !kv_file_read_all(path, &src, &len, &ferr)) {
            kv_chat_template *ct = calloc(1, sizeof *ct);
            rc = !ct ? kv_err_set(err, KV_ENOMEM, "out of memory") : kv_template_compile(src, len, limits, &ct->main, err);
            if (!rc)
                rc = take_specials(ct, config, err);
            free(src);
            if (rc)
                kv_chat_template_free(ct);
            else
                *out = ct;
        } else {
            kv_err_set(err, KV_ENOTFOUND, "the model in %s has no chat template (neither chat_template in "
                                          "tokenizer_config.json nor chat_template.jinja)", model_dir);
        }
    }
    if (!rc) { /* special_tokens_map.json fills what the config lacks */
        char *t2;
        json_doc *d2;
        kv_err ignore = {0};
        if (!read_json(model_dir, "special_tokens_map.json", &t2, &d2, &ignore)) {
            rc = take_specials(*out, json_root(d2), err);
            json_doc_free(d2);
            free(t2);
            if (rc) {
                kv_chat_template_free(*out);
                *out = NULL;
            }
        }
    }
    json_doc_free(doc);
    free(text);
    return rc;
}

/* ---- rendering ---- */

/* transformers' _normalize_chat_messages and _alias_reasoning_fields, on one message: members
 * whose value is null go; a reasoning text (reasoning_content, else thinking, else reasoning)
 * is offered as {"thinking": r, **message, "reasoning_content": r}. */
static int normalize_message(const json_value *m, json_value *out, kv_err *err)
{
    if (m->type != JSON_OBJECT)
        return kv_err_set(err, KV_EINVAL, "messages: each message must be an object, not %s", json_type_name(m->type));
    static const char *const reasoning_keys[] = {"reasoning_content", "thinking", "reasoning"};
    const json_value *reasoning = NULL;
    for (size_t k = 0; k < 3 && !reasoning; k++) {
        const json_value *v = json_get(m, reasoning_keys[k]);
        if (v && v->type != JSON_NULL)
            reasoning = v;
    }
    size_t n = m->u.obj.n;
    json_member *mem = calloc(n + 2, sizeof *mem);
    if (!mem)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    size_t k = 0;
    int has_rc = 0;
    if (reasoning)
        mem[k++] = (json_member){.key = "thinking", .key_len = 8, .value = *reasoning};
    for (size_t i = 0; i < n; i++) {
        const json_member *src = &m->u.obj.members[i];
        if (src->value.type == JSON_NULL)
            continue;
        if (reasoning && src->key_len == 8 && !memcmp(src->key, "thinking", 8)) {
            mem[0].value = src->value;
            continue;
        }
        if (reasoning && src->key_len == 17 && !memcmp(src->key, "reasoning_content", 17)) {
            has_rc = 1;
            mem[k] = *src;
            mem[k++].value = *reasoning;
            continue;
        }
        mem[k++] = *src;
    }
    if (reasoning && !has_rc)
        mem[k++] = (json_member){.key = "reasoning_content", .key_len = 17, .value = *reasoning};
    *out = *m;
    out->u.obj.members = mem;
    out->u.obj.n = k;
    return KV_OK;
}

int kv_chat_template_render(const kv_chat_template *ct, const json_value *messages, const kv_chat_render_opts *opts,
                            char **out, size_t *out_len, kv_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    kv_chat_render_opts none = {0};
    if (!opts)
        opts = &none;
    if (!messages || messages->type != JSON_ARRAY)
        return kv_err_set(err, KV_EINVAL, "messages must be a JSON array");
    if (opts->tools && opts->tools->type != JSON_ARRAY && opts->tools->type != JSON_NULL)
        return kv_err_set(err, KV_EINVAL, "tools must be a JSON array");
    size_t n = messages->u.arr.n;
    json_value *items = calloc(n ? n : 1, sizeof *items);
    size_t nvars = N_SPECIAL + opts->n_extra + 4;
    kv_template_var *vars = calloc(nvars, sizeof *vars);
    json_value *specials = calloc(N_SPECIAL, sizeof *specials);
    int rc = items && vars && specials ? KV_OK : kv_err_set(err, KV_ENOMEM, "out of memory");
    size_t done = 0;
    for (; done < n && !rc; done++)
        rc = normalize_message(&messages->u.arr.items[done], &items[done], err);
    if (!rc) {
        json_value msgs = {.type = JSON_ARRAY};
        msgs.u.arr.items = items;
        msgs.u.arr.n = n;
        json_value gen = {.type = JSON_BOOL}, null = {.type = JSON_NULL};
        gen.u.boolean = !!opts->add_generation_prompt;
        size_t k = 0;
        for (size_t i = 0; i < N_SPECIAL; i++) {
            if (!ct->special[i])
                continue;
            specials[i].type = JSON_STRING;
            specials[i].u.str.s = ct->special[i];
            specials[i].u.str.len = ct->special_len[i];
            vars[k++] = (kv_template_var){special_names[i], &specials[i]};
        }
        for (size_t i = 0; i < opts->n_extra; i++)
            vars[k++] = opts->extra[i];
        vars[k++] = (kv_template_var){"messages", &msgs};
        vars[k++] = (kv_template_var){"tools", opts->tools ? opts->tools : &null};
        vars[k++] = (kv_template_var){"documents", opts->documents ? opts->documents : &null};
        vars[k++] = (kv_template_var){"add_generation_prompt", &gen};
        int use_tools = opts->tools && opts->tools->type == JSON_ARRAY && ct->tool_use;
        kv_template_render_opts ro = {.vars = vars, .n_vars = k, .fixed_now = opts->fixed_now};
        rc = kv_template_render(use_tools ? ct->tool_use : ct->main, &ro, out, out_len, err);
    }
    for (size_t i = 0; i < done; i++)
        if (items[i].type == JSON_OBJECT)
            free(items[i].u.obj.members);
    free(items);
    free(vars);
    free(specials);
    return rc;
}
