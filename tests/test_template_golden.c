/* Chat templates against transformers: every case of tests/data/chat_templates/goldens.json
 * (written by make_goldens.py with transformers' own render_jinja_template) rendered by
 * kv_chat_template and compared byte for byte; where transformers raised, this must fail too,
 * and a template's raise_exception message must be the same.
 *
 *   test_template_golden [--data DIR] [--model DIR] [--only SUBSTRING]
 *
 * Templates: templates/NAME.jinja (in the data directory), "shared:tokenizers/NAME" (the shared
 * models' tokenizer_config.json; skipped without them) and "model:smollm2" (the model directory
 * given with --model, e.g. what `kvctl model import` wrote for SmolLM2; skipped without it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "kv_file.h"
#include "kv_test.h"
#include "kv_textbuf.h"

#define MAX_CACHED 64

typedef struct cached {
    char name[128];
    kv_chat_template *ct; /* NULL: unavailable (skipped) */
} cached;

typedef struct ctx {
    const char *data, *model, *only;
    const json_value *own_specials;
    cached cache[MAX_CACHED];
    int n_cached;
    int skipped, ran;
} ctx;

static json_doc *load_json(const char *path, char **text)
{
    size_t len;
    kv_err err = {0};
    if (kv_file_read_all(path, text, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    json_doc *d = json_parse(*text, len, &err);
    if (!d)
        fprintf(stderr, "%s: %s\n", path, err.msg);
    return d;
}

/* Our own templates get the special tokens make_goldens.py gave them, through the same
 * tokenizer_config.json route as a model's. NULL (with the message in err) if it fails. */
static kv_chat_template *template_from_source(ctx *c, const char *src, size_t len, kv_err *err)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    kv_textbuf_puts(&b, "{\"chat_template\": ");
    kv_textbuf_json_string(&b, src, len);
    const json_value *sp = c->own_specials;
    for (size_t i = 0; sp && i < sp->u.obj.n; i++) {
        kv_textbuf_puts(&b, ", ");
        kv_textbuf_json_string(&b, sp->u.obj.members[i].key, sp->u.obj.members[i].key_len);
        kv_textbuf_puts(&b, ": ");
        kv_textbuf_json_string(&b, sp->u.obj.members[i].value.u.str.s, sp->u.obj.members[i].value.u.str.len);
    }
    kv_textbuf_puts(&b, "}");
    kv_chat_template *ct = NULL;
    json_doc *d = kv_textbuf_failed(&b) ? NULL : json_parse(b.data, b.len, err);
    if (d)
        kv_chat_template_from_config(json_root(d), NULL, &ct, err);
    json_doc_free(d);
    kv_textbuf_free(&b);
    return ct;
}

static kv_chat_template *own_template(ctx *c, const char *rel)
{
    char path[4096], *src;
    size_t len;
    kv_err err = {0};
    snprintf(path, sizeof path, "%s/%s", c->data, rel);
    if (kv_file_read_all(path, &src, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    kv_chat_template *ct = template_from_source(c, src, len, &err);
    if (!ct)
        fprintf(stderr, "%s: %s\n", rel, err.msg);
    free(src);
    return ct;
}

static kv_chat_template *get_template(ctx *c, const char *name, int *skip)
{
    for (int i = 0; i < c->n_cached; i++)
        if (!strcmp(c->cache[i].name, name)) {
            *skip = !c->cache[i].ct;
            return c->cache[i].ct;
        }
    kv_chat_template *ct = NULL;
    kv_err err = {0};
    *skip = 0;
    if (!strncmp(name, "templates/", 10)) {
        ct = own_template(c, name);
        CHECK_MSG(ct != NULL, "%s does not compile", name);
    } else if (!strncmp(name, "shared:", 7)) {
        const char *models = kv_test_models_dir();
        char dir[4096];
        if (models) {
            snprintf(dir, sizeof dir, "%s/%s", models, name + 7);
            if (kv_chat_template_load(dir, NULL, &ct, &err))
                CHECK_MSG(0, "%s: %s", dir, err.msg);
        }
    } else if (!strcmp(name, "model:smollm2") && c->model) {
        if (kv_chat_template_load(c->model, NULL, &ct, &err))
            CHECK_MSG(0, "%s: %s", c->model, err.msg);
    }
    if (!ct)
        *skip = 1;
    if (c->n_cached < MAX_CACHED) {
        snprintf(c->cache[c->n_cached].name, sizeof c->cache[c->n_cached].name, "%s", name);
        c->cache[c->n_cached++].ct = ct;
    }
    return ct;
}

static void show_difference(const char *got, size_t got_len, const char *want, size_t want_len)
{
    size_t i = 0;
    while (i < got_len && i < want_len && got[i] == want[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "  first difference at byte %zu (got %zu bytes, expected %zu)\n  got:      \"%.*s\"\n  expected: \"%.*s\"\n",
            i, got_len, want_len, (int)((got_len < i + 40 ? got_len : i + 40) - from), got + from,
            (int)((want_len < i + 40 ? want_len : i + 40) - from), want + from);
}

/* Compares a render (rc, out, err) with what transformers did for the case. */
static void check_result(const char *id, const json_value *cs, int rc, const char *out, size_t len, const kv_err *err)
{
    const json_value *want = json_get(cs, "output");
    if (getenv("KV_TEMPLATE_VERBOSE") && (rc || !want))
        fprintf(stderr, "%s:\n  ours:         %s\n  transformers: %s: %s\n", id, rc ? err->msg : "(rendered)",
                json_get_string(cs, "error") ? json_get_string(cs, "error") : "(rendered)",
                json_get_string(cs, "message") ? json_get_string(cs, "message") : "");
    if (want) {
        CHECK_MSG(rc == 0, "%s: failed: %s", id, err->msg);
        if (!rc) {
            int same = len == want->u.str.len && !memcmp(out, want->u.str.s, len);
            CHECK_MSG(same, "%s: output differs from transformers'", id);
            if (!same)
                show_difference(out, len, want->u.str.s, want->u.str.len);
        }
        return;
    }
    const char *kind = json_get_string(cs, "error"), *msg = json_get_string(cs, "message");
    CHECK_MSG(rc != 0, "%s: rendered, but transformers raised %s: %s", id, kind ? kind : "?", msg ? msg : "");
    if (rc && kind && msg && !strcmp(kind, "TemplateError")) {
        /* "chat_template:LINE:COL: " then raise_exception's message verbatim */
        const char *p = strstr(err->msg, ": ");
        CHECK_MSG(p && !strcmp(p + 2, msg), "%s: message \"%s\", expected \"...: %s\"", id, err->msg, msg);
    }
}

static void run_snippet(ctx *c, const json_value *sn, size_t index, const json_value *messages, long fixed_now)
{
    const json_value *src = json_get(sn, "template");
    char id[160];
    snprintf(id, sizeof id, "snippet %zu: %.100s", index, src && src->type == JSON_STRING ? src->u.str.s : "?");
    if (!src || src->type != JSON_STRING) {
        CHECK_MSG(0, "%s: malformed", id);
        return;
    }
    if (c->only && !strstr(id, c->only))
        return;
    kv_err err = {0};
    char *out = NULL;
    size_t len = 0;
    int rc;
    kv_chat_template *ct = template_from_source(c, src->u.str.s, src->u.str.len, &err);
    if (!ct) {
        rc = err.code ? err.code : KV_EFORMAT;
    } else {
        kv_chat_render_opts opts = {.fixed_now = fixed_now};
        rc = kv_chat_template_render(ct, messages, &opts, &out, &len, &err);
    }
    c->ran++;
    check_result(id, sn, rc, out, len, &err);
    free(out);
    kv_chat_template_free(ct);
}

static void run_case(ctx *c, const json_value *cs, long fixed_now)
{
    const char *tname = json_get_string(cs, "template"), *set = json_get_string(cs, "messages");
    int gen = 0;
    json_get_bool(cs, "add_generation_prompt", &gen);
    char id[300];
    snprintf(id, sizeof id, "%s x %s%s", tname ? tname : "?", set ? set : "?", gen ? " +gen" : "");
    if (!tname || !set) {
        CHECK_MSG(0, "%s: malformed case", id);
        return;
    }
    if (c->only && !strstr(id, c->only))
        return;
    int skip;
    kv_chat_template *ct = get_template(c, tname, &skip);
    if (skip) {
        c->skipped++;
        return;
    }
    char path[4096], *text;
    snprintf(path, sizeof path, "%s/messages/%s.json", c->data, set);
    json_doc *d = load_json(path, &text);
    CHECK_MSG(d != NULL, "%s: no messages", id);
    if (!d)
        return;
    const json_value *root = json_root(d);
    kv_chat_render_opts opts = {.tools = json_get(root, "tools"), .add_generation_prompt = gen, .fixed_now = fixed_now};
    char *out = NULL;
    size_t len = 0;
    kv_err err = {0};
    int rc = kv_chat_template_render(ct, json_get(root, "messages"), &opts, &out, &len, &err);
    c->ran++;
    check_result(id, cs, rc, out, len, &err);
    free(out);
    json_doc_free(d);
    free(text);
}

int main(int argc, char **argv)
{
    ctx c = {.data = KV_TEMPLATE_DATA};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc)
            c.data = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            c.model = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            c.only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--data DIR] [--model DIR] [--only SUBSTRING]\n", argv[0]);
            return 2;
        }
    }
    char path[4096], *text;
    snprintf(path, sizeof path, "%s/goldens.json", c.data);
    json_doc *d = load_json(path, &text);
    if (!d)
        return 1;
    const json_value *root = json_root(d), *cases = json_get(root, "cases");
    c.own_specials = json_get(root, "own_specials");
    int64_t fixed_now = 0;
    json_get_int(root, "fixed_now", &fixed_now);
    CHECK(cases && cases->type == JSON_ARRAY && cases->u.arr.n > 0);
    for (size_t i = 0; cases && i < cases->u.arr.n; i++)
        run_case(&c, &cases->u.arr.items[i], (long)fixed_now);
    const json_value *snippets = json_get(root, "snippets");
    char *mtext;
    snprintf(path, sizeof path, "%s/messages/multi_turn.json", c.data);
    json_doc *md = load_json(path, &mtext);
    CHECK(md && snippets && snippets->type == JSON_ARRAY);
    for (size_t i = 0; md && snippets && i < snippets->u.arr.n; i++)
        run_snippet(&c, &snippets->u.arr.items[i], i, json_get(json_root(md), "messages"), (long)fixed_now);
    json_doc_free(md);
    free(mtext);
    fprintf(stderr, "%d cases rendered, %d skipped (%s%s)\n", c.ran, c.skipped,
            kv_test_models_dir() ? "" : "no shared models; ",
            c.model ? "" : "no --model DIR for the SmolLM2 cases");
    for (int i = 0; i < c.n_cached; i++)
        kv_chat_template_free(c.cache[i].ct);
    json_doc_free(d);
    free(text);
    return kv_test_result();
}
