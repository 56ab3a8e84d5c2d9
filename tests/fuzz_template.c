/* Fuzz target of the chat template interpreter (common/template): the input is a template's
 * source, rendered over fixed messages and tools (a multi-turn chat with tool calls) under
 * small limits. Compiling and rendering must never crash, leak or read past the input; a
 * refusal must carry a message that names "chat_template:LINE:COL:"; a render must stay
 * within the output cap, be NUL-terminated at its length, and come out the same the second
 * time (a compiled template is immutable). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "kv_fuzz_target.h"

static const char messages_json[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"What's the weather in \\\"Paris\\\"? \\u00e9\\n\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"type\": \"function\", \"function\":"
    " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3, \"ratio\": 0.5}}}]},"
    " {\"role\": \"tool\", \"content\": \"22C\"},"
    " {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Sunny.\"}], \"reasoning_content\": \"easy\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\":"
    " {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}]}";

static void check_error(const kv_err *err, int rc, const char *when)
{
    KV_FUZZ_REQUIRE(rc < 0 && err->code == rc, "%s: code %d, err.code %d", when, rc, err->code);
    if (rc == KV_ENOMEM)
        return;
    int line = 0, col = 0;
    KV_FUZZ_REQUIRE(sscanf(err->msg, "chat_template:%d:%d: ", &line, &col) == 2 && line >= 0 && col >= 0,
                    "%s: no position in \"%s\"", when, err->msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_doc *doc;
    if (!doc) {
        kv_err err = {0};
        doc = json_parse(messages_json, sizeof messages_json - 1, &err);
        KV_FUZZ_REQUIRE(doc != NULL, "the fixed messages do not parse: %s", err.msg);
    }
    const json_value *root = json_root(doc);
    kv_template_limits lim = kv_template_default_limits();
    lim.max_output = 64 * 1024;
    lim.max_string = 64 * 1024;
    lim.max_iterations = 20000;
    lim.max_depth = 24;
    lim.max_memory = 16 << 20;

    kv_template *t;
    kv_err err = {0};
    int rc = kv_template_compile((const char *)data, size, &lim, &t, &err);
    if (rc) {
        KV_FUZZ_REQUIRE(t == NULL, "a refused template was returned");
        if (getenv("KV_FUZZ_TEMPLATE_STATS"))
            fprintf(stderr, "compile: %s\n", err.msg);
        check_error(&err, rc, "compile");
        return 0;
    }
    json_value gen = {.type = JSON_BOOL};
    gen.u.boolean = 1;
    kv_template_var vars[] = {{"messages", json_get(root, "messages")}, {"tools", json_get(root, "tools")},
                              {"add_generation_prompt", &gen}};
    kv_template_render_opts opts = {.vars = vars, .n_vars = 3, .fixed_now = 1721995200};
    char *out[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int rcs[2];
    kv_err errs[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        rcs[i] = kv_template_render(t, &opts, &out[i], &len[i], &errs[i]);
        if (rcs[i]) {
            KV_FUZZ_REQUIRE(out[i] == NULL, "a failed render returned text");
            check_error(&errs[i], rcs[i], "render");
        } else {
            KV_FUZZ_REQUIRE(out[i] && out[i][len[i]] == '\0' && len[i] <= lim.max_output, "render of %zu bytes", len[i]);
        }
    }
    KV_FUZZ_REQUIRE(rcs[0] == rcs[1], "two renders disagree: %d then %d", rcs[0], rcs[1]);
    if (getenv("KV_FUZZ_TEMPLATE_STATS"))
        fprintf(stderr, "%s\n", rcs[0] ? errs[0].msg : "rendered");
    KV_FUZZ_REQUIRE(rcs[0] || (len[0] == len[1] && !memcmp(out[0], out[1], len[0])), "two renders differ");
    KV_FUZZ_REQUIRE(!rcs[0] || !strcmp(errs[0].msg, errs[1].msg), "two errors differ");
    free(out[0]);
    free(out[1]);
    kv_template_free(t);
    return 0;
}

/* ---- the generator: templates built from the constructs chat templates use ---- */

typedef struct {
    uint8_t *p;
    size_t cap, len;
} gen_out;

static void put(gen_out *o, const char *s)
{
    size_t n = strlen(s);
    if (n > o->cap - o->len)
        n = o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}


static const char *const exprs[] = {
    "messages", "messages[0]", "messages[-1].content", "message.role", "message['content']", "tools",
    "tools[0].function.parameters", "add_generation_prompt", "loop.index0", "loop.last", "ns.x", "x",
    "'text'", "\"dq\\n\"", "1", "-2", "3.5", "none", "true", "[1, 'a', none]", "{'k': [1, 2]}", "(1, 2)",
    "range(5)", "namespace(x=1)", "messages | length", "message.content | trim", "tools | tojson(indent=2)",
    "messages | selectattr('role', 'equalto', 'user') | list", "messages | map(attribute='role') | join(',')",
    "message.tool_calls[0].function.arguments | tojson", "'a,b'.split(',')", "message.content.strip()",
    "x is defined", "message.content is string", "loop.index0 % 2 == 0", "messages[1:]", "'abc'[::-1]",
    "strftime_now('%d %b %Y')", "'x' * 3", "2 ** 10", "7 // 2", "'a' ~ 1", "1 if x else 2", "not x",
    "x or 'd'", "'k' in {'k': 1}", "messages | sort(attribute='role') | first", "[3, 1] | sort | list",
    "message.get('name', 'anon')", "message.items() | list", "{'a': 1}.keys() | list", "range(3) | sum",
    "x | default('d', true)", "messages | batch(2) | list", "'%s-%d' | format('a', 1)", "m(1)", "caller()",
};

static const char *const binops[] = {" + ", " - ", " * ", " / ", " // ", " % ", " ~ ", " == ", " != ", " < ",
                                     " and ", " or ", " in ", " not in ", " ** "};

static void gen_expr(kv_fuzz_rng *r, gen_out *o, int depth)
{
    if (depth > 3 || kv_fuzz_below(r, 3)) {
        put(o, KV_FUZZ_PICK(r, exprs));
        return;
    }
    switch (kv_fuzz_below(r, 4)) {
    case 0:
        gen_expr(r, o, depth + 1);
        put(o, KV_FUZZ_PICK(r, binops));
        gen_expr(r, o, depth + 1);
        break;
    case 1:
        put(o, "(");
        gen_expr(r, o, depth + 1);
        put(o, ")");
        break;
    case 2:
        gen_expr(r, o, depth + 1);
        put(o, kv_fuzz_below(r, 2) ? " | upper" : " | length");
        break;
    default:
        gen_expr(r, o, depth + 1);
        put(o, " if ");
        gen_expr(r, o, depth + 1);
        put(o, " else ");
        gen_expr(r, o, depth + 1);
    }
}

static void gen_body(kv_fuzz_rng *r, gen_out *o, int depth)
{
    static const char *const text[] = {"<|im_start|>", "\n", "  ", "text ", "{{ '{' }}", "\t", "é🦙", "\r\n"};
    static const char *const ws[] = {"", "-", "+"};
    for (int n = 1 + (int)kv_fuzz_below(r, 3); n > 0 && o->len * 4 < o->cap; n--) { /* room for the closing tags */
        int k = (int)kv_fuzz_below(r, depth > 3 ? 3 : 11);
        const char *l = KV_FUZZ_PICK(r, ws), *rr = kv_fuzz_below(r, 2) ? KV_FUZZ_PICK(r, ws) : "";
        char open[8], close[8];
        snprintf(open, sizeof open, "{%%%s ", l);
        snprintf(close, sizeof close, " %s%%}", rr);
        switch (k) {
        case 0: put(o, KV_FUZZ_PICK(r, text)); break;
        case 1:
            put(o, kv_fuzz_below(r, 2) ? "{{- " : "{{ ");
            gen_expr(r, o, 0);
            put(o, kv_fuzz_below(r, 2) ? " -}}" : " }}");
            break;
        case 2: put(o, kv_fuzz_below(r, 2) ? "{# comment #}" : "{#- c -#}\n"); break;
        case 3:
            put(o, open);
            put(o, "for message in messages");
            put(o, kv_fuzz_below(r, 3) ? "" : " if message.role != 'tool'");
            put(o, close);
            gen_body(r, o, depth + 1);
            if (!kv_fuzz_below(r, 4))
                put(o, "{% else %}none");
            put(o, "{% endfor %}");
            break;
        case 4:
            put(o, open);
            put(o, "if ");
            gen_expr(r, o, 0);
            put(o, close);
            gen_body(r, o, depth + 1);
            if (kv_fuzz_below(r, 2)) {
                put(o, "{% elif ");
                gen_expr(r, o, 0);
                put(o, " %}");
                gen_body(r, o, depth + 1);
            }
            put(o, "{%- else %}");
            gen_body(r, o, depth + 1);
            put(o, "{% endif %}");
            break;
        case 5:
            put(o, "{% set ");
            put(o, kv_fuzz_below(r, 2) ? "x = " : "ns.x = ");
            gen_expr(r, o, 0);
            put(o, " %}");
            break;
        case 6:
            put(o, "{% set ns = namespace(x=0) %}");
            break;
        case 7:
            put(o, "{% macro m(a, b=2) %}");
            gen_body(r, o, depth + 1);
            put(o, "{% endmacro %}");
            break;
        case 8:
            put(o, "{% for i in range(3) %}{% if i == 1 %}{% break %}{% endif %}");
            gen_body(r, o, depth + 1);
            put(o, "{% endfor %}");
            break;
        case 9: put(o, "{% raw %}{{ raw }}{% endraw %}"); break;
        default:
            put(o, "{% generation %}");
            gen_body(r, o, depth + 1);
            put(o, "{% endgeneration %}");
        }
    }
}

size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    gen_out o = {buf, cap, 0};
    if (!kv_fuzz_below(r, 8))
        put(&o, "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ caller() if caller is defined }}{% endmacro %}");
    gen_body(r, &o, 0);
    return o.len;
}
