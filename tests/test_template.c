/* Chat template interpreter (common/template): errors name their line and column, caps on
 * output, strings, iterations, depth and memory hold, sources are read as jinja2 reads them
 * (CRLF, the trailing newline), a compiled template renders the same from several threads, and
 * the model-level API picks templates and special tokens as transformers does.
 * The byte-for-byte comparisons with transformers are in test_template_golden.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "kv_test.h"

/* Renders src with JSON variables (an object's members) and limits; returns the code. */
static int render(const char *src, const char *vars_json, const kv_template_limits *lim, char **out, kv_err *err)
{
    kv_template *t;
    *out = NULL;
    int rc = kv_template_compile(src, strlen(src), lim, &t, err);
    if (rc)
        return rc;
    json_doc *d = NULL;
    kv_template_var vars[16];
    size_t n = 0;
    if (vars_json) {
        d = json_parse(vars_json, strlen(vars_json), err);
        const json_value *root = json_root(d);
        for (size_t i = 0; i < root->u.obj.n && n < 16; i++)
            vars[n++] = (kv_template_var){root->u.obj.members[i].key, &root->u.obj.members[i].value};
    }
    kv_template_render_opts opts = {.vars = vars, .n_vars = n, .fixed_now = 1721995200};
    rc = kv_template_render(t, &opts, out, NULL, err);
    json_doc_free(d);
    kv_template_free(t);
    return rc;
}

static void expect_output(const char *src, const char *vars, const char *want)
{
    char *out;
    kv_err err = {0};
    int rc = render(src, vars, NULL, &out, &err);
    CHECK_MSG(rc == 0 && out && !strcmp(out, want), "%s: expected \"%s\", got \"%s\" (%s)", src, want,
              out ? out : "", rc ? err.msg : "ok");
    free(out);
}

static void expect_error(const char *src, const char *vars, const kv_template_limits *lim, int code,
                         const char *msg_start)
{
    char *out;
    kv_err err = {0};
    int rc = render(src, vars, lim, &out, &err);
    CHECK_MSG(rc == code && !strncmp(err.msg, msg_start, strlen(msg_start)), "%.60s: expected %s \"%s...\", got %s \"%s\"",
              src, kv_code_name(code), msg_start, kv_code_name(rc), err.msg);
    CHECK(out == NULL);
    free(out);
}

static void test_syntax_errors(void)
{
    expect_error("line one\n{% for x in y %}\n  {{ x }}{% endfor %}\n   {% endfor %}", NULL, NULL, KV_EFORMAT,
                 "chat_template:4:7: unexpected 'endfor'");
    expect_error("{% if true %}\nno end", NULL, NULL, KV_EFORMAT,
                 "chat_template:2:7: unexpected end of template, expected 'elif' or 'else' or 'endif'");
    expect_error("ok\n  {{ 1 + }}", NULL, NULL, KV_EFORMAT, "chat_template:2:10: unexpected 'end of print statement'");
    expect_error("{{ x | no_such_filter }}", NULL, NULL, KV_EFORMAT, "chat_template:1:8: no filter named 'no_such_filter'");
    expect_error("{% frobnicate %}", NULL, NULL, KV_EFORMAT, "chat_template:1:4: unknown tag 'frobnicate'");
    expect_error("{# never closed", NULL, NULL, KV_EFORMAT, "chat_template:1:3: Missing end of comment tag");
    expect_error("{{ 'open }}", NULL, NULL, KV_EFORMAT, "chat_template:1:4: unexpected char");
    expect_error("{{ (1 ] }}", NULL, NULL, KV_EFORMAT, "chat_template:1:7: unexpected ']', expected ')'");
    expect_error("{% break %}", NULL, NULL, KV_EFORMAT, "chat_template:1:4: 'break' outside loop");
    expect_error("{% for x in y recursive %}{% endfor %}", NULL, NULL, KV_EFORMAT, "chat_template:1:15: recursive loops");
    expect_error("{{ 99999999999999999999 }}", NULL, NULL, KV_EFORMAT, "chat_template:1:4: integer literal too large");
}

static void test_runtime_errors(void)
{
    expect_error("a\nb {{ 1 + 'x' }}", NULL, NULL, KV_EINVAL, "chat_template:2:8: TypeError: unsupported operand");
    expect_error("{{ raise_exception('Only user and assistant roles are supported!') }}", NULL, NULL, KV_EINVAL,
                 "chat_template:1:19: Only user and assistant roles are supported!");
    expect_error("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
                 "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}", NULL, KV_EINVAL,
                 "chat_template:1:56: System role not supported");
    expect_error("{{ messages[0].content.x.y }}", "{\"messages\": [{\"content\": {}}]}", NULL, KV_EINVAL,
                 "chat_template:1:25: UndefinedError: 'dict object' has no attribute 'x'");
    expect_error("{{ messages.append(1) }}", "{\"messages\": []}", NULL, KV_EINVAL,
                 "chat_template:1:19: SecurityError: access to attribute 'append' of 'list' object is unsafe.");
    expect_error("{{ ''.__class__() }}", NULL, NULL, KV_EINVAL, "chat_template:1:16: SecurityError");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, NULL, KV_ERANGE, "chat_template:1:24: integer overflow");
    expect_error("{{ range(200000) | length }}", NULL, NULL, KV_ERANGE, "chat_template:1:9: OverflowError: Range too big");
}

static void test_limits(void)
{
    kv_template_limits lim = kv_template_default_limits();
    CHECK_EQ_INT(lim.max_output, 1 << 20);
    CHECK_EQ_INT(lim.max_iterations, 1000000);
    CHECK_EQ_INT(lim.max_depth, 64);
    /* an infinite-ish loop: nested ranges */
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL, NULL,
                 KV_ERANGE, "chat_template:1:32: loop iteration limit of 1000000 exceeded");
    /* huge strings */
    expect_error("{{ 'x' * 100000000 }}", NULL, NULL, KV_ERANGE, "chat_template:1:8: string size limit");
    expect_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}",
                 NULL, NULL, KV_ERANGE, "chat_template:1:");
    /* output */
    kv_template_limits small = lim;
    small.max_output = 100;
    expect_error("{% for i in range(1000) %}{{ i }}{% endfor %}", NULL, &small, KV_ERANGE,
                 "chat_template:1:27: output limit of 100 bytes exceeded");
    /* deep recursion through a macro */
    expect_error("{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}", NULL, NULL, KV_ERANGE,
                 "chat_template:1:27: call depth limit of 64 exceeded");
    /* deep nesting in the source */
    char deep[4096] = "{{ ";
    for (int i = 0; i < 200; i++)
        strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 200; i++)
        strcat(deep, ")");
    strcat(deep, " }}");
    expect_error(deep, NULL, NULL, KV_ERANGE, "chat_template:1:89: nesting deeper than 256");
    /* memory */
    kv_template_limits tight = lim;
    tight.max_memory = 1 << 20;
    expect_error("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
                 NULL, &tight, KV_ERANGE, "chat_template:1:");
}

static void test_source_reading(void)
{
    /* \r\n and \r read as \n; one trailing newline dropped, as jinja2 (keep_trailing_newline off) */
    expect_output("a\r\nb\rc\n", NULL, "a\nb\nc");
    expect_output("a\n\n", NULL, "a\n");
    expect_output("{% if true %}\r\n  x\r\n{% endif %}\r\n", NULL, "  x\n");
    expect_output("", NULL, "");
    /* trim_blocks and lstrip_blocks */
    expect_output("  {% if true %}\nyes\n  {% endif %}\nend", NULL, "yes\nend");
    expect_output("x  {% if true %}y{% endif %}", NULL, "x  y");
    expect_output("{{ strftime_now('%Y-%m-%d') }}", NULL, "2024-07-26");
}

typedef struct thread_job {
    const kv_template *t;
    char *out;
    int rc;
} thread_job;

static void *render_thread(void *arg)
{
    thread_job *j = arg;
    kv_err err = {0};
    for (int i = 0; i < 50 && !j->rc; i++) {
        free(j->out);
        j->rc = kv_template_render(j->t, NULL, &j->out, NULL, &err);
    }
    return NULL;
}

static void test_threads(void)
{
    const char *src = "{% set ns = namespace(n=0) %}{% for i in range(200) %}{% set ns.n = ns.n + i %}"
                      "{{ [i, 'x' ~ i] | tojson }}{% endfor %}{{ ns.n }}";
    kv_template *t;
    kv_err err = {0};
    CHECK(kv_template_compile(src, strlen(src), NULL, &t, &err) == 0);
    char *want;
    CHECK(kv_template_render(t, NULL, &want, NULL, &err) == 0);
    thread_job jobs[4] = {{0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].t = t;
        pthread_create(&th[i], NULL, render_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].rc == 0 && jobs[i].out && !strcmp(jobs[i].out, want));
        free(jobs[i].out);
    }
    free(want);
    kv_template_free(t);
}

static kv_chat_template *from_config(const char *json, int *rc)
{
    kv_err err = {0};
    json_doc *d = json_parse(json, strlen(json), &err);
    kv_chat_template *ct = NULL;
    *rc = d ? kv_chat_template_from_config(json_root(d), NULL, &ct, &err) : -1;
    json_doc_free(d);
    return ct;
}

static void test_model_level(void)
{
    int rc;
    kv_chat_template *ct = from_config("{\"bos_token\": \"<s>\"}", &rc);
    CHECK(!ct && rc == KV_ENOTFOUND);
    ct = from_config("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T{{ tools | length }}\"},"
                     " {\"name\": \"default\", \"template\": \"D{{ bos_token }}{{ pad_token }}{{ eos_token is defined }}"
                     "{% for m in messages %}|{{ m | tojson }}{% endfor %}\"}],"
                     " \"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<B>\"}, \"pad_token\": \"<P>\","
                     " \"eos_token\": null}",
                     &rc);
    CHECK(ct && rc == 0);
    const char *msgs = "[{\"role\": \"user\", \"content\": \"hi\", \"name\": null},"
                       " {\"role\": \"assistant\", \"content\": \"ok\", \"reasoning\": \"why\"}]";
    kv_err err = {0};
    json_doc *md = json_parse(msgs, strlen(msgs), &err), *td = json_parse("[1, 2, 3]", 9, &err);
    char *out = NULL;
    size_t len;
    /* nulls dropped; reasoning offered as thinking and reasoning_content, as transformers does */
    CHECK(kv_chat_template_render(ct, json_root(md), NULL, &out, &len, &err) == 0);
    const char *want = "D<B><P>False|{\"role\": \"user\", \"content\": \"hi\"}|{\"thinking\": \"why\", \"role\": \"assistant\", "
                       "\"content\": \"ok\", \"reasoning\": \"why\", \"reasoning_content\": \"why\"}";
    CHECK_MSG(out && !strcmp(out, want) && len == strlen(want), "got %s", out ? out : err.msg);
    free(out);
    kv_chat_render_opts opts = {.tools = json_root(td)};
    CHECK(kv_chat_template_render(ct, json_root(md), &opts, &out, &len, &err) == 0);
    CHECK(out && !strcmp(out, "T3"));
    free(out);
    CHECK(kv_chat_template_render(ct, json_root(td), NULL, &out, &len, &err) == KV_EINVAL);
    json_doc_free(md);
    json_doc_free(td);
    kv_chat_template_free(ct);
    ct = from_config("{\"chat_template\": \"{% if %}\"}", &rc);
    CHECK(!ct && rc == KV_EFORMAT);
}

int main(void)
{
    test_syntax_errors();
    test_runtime_errors();
    test_limits();
    test_source_reading();
    test_threads();
    test_model_level();
    return kv_test_result();
}
