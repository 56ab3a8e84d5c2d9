/* Post-processors, as the ids they put around a single sequence when encoding with special
 * tokens: TemplateProcessing (its "single" template), RobertaProcessing / BertProcessing
 * (cls, the text, sep), ByteLevel (offsets only: nothing), and a Sequence of these, which
 * applies each to the previous one's output and so composes into one template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct {
    int32_t item[TOK_POST_MAX];
    size_t n;
} post_list;

static int id_ok(const kv_tokenizer *tok, const json_value *v, int32_t *out)
{
    if (v->type != JSON_NUMBER || v->u.number < 0 || v->u.number >= tok->n_ids ||
        v->u.number != (double)(int32_t)v->u.number)
        return 0;
    *out = (int32_t)v->u.number;
    return 1;
}

static int push(post_list *l, int32_t id, const char *where, kv_err *err)
{
    if (l->n == TOK_POST_MAX)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: more than %d special tokens around the sequence", where,
                          TOK_POST_MAX);
    l->item[l->n++] = id;
    return 0;
}

/* One "single" template piece: {"SpecialToken": {"id": NAME}} or {"Sequence": {"id": "A"}}. */
static int template_piece(const kv_tokenizer *tok, const json_value *piece, const json_value *specials,
                          post_list *out, const char *where, kv_err *err)
{
    const json_value *seq = json_get(piece, "Sequence"), *sp = json_get(piece, "SpecialToken");
    if (seq && seq->type == JSON_OBJECT) {
        const char *name = json_get_string(seq, "id");
        if (!name || strcmp(name, "A"))
            return kv_err_set(err, KV_EFORMAT, "%s.Sequence.id: the single template holds only sequence A", where);
        return push(out, TOK_POST_SEQUENCE, where, err);
    }
    if (!sp || sp->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: expected {\"SpecialToken\": ...} or {\"Sequence\": ...}", where);
    const char *name = json_get_string(sp, "id");
    const json_value *entry = name && specials ? json_get(specials, name) : NULL;
    const json_value *ids = entry ? json_get(entry, "ids") : NULL;
    if (!ids || ids->type != JSON_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "%s: special token \"%.64s\" has no ids in special_tokens", where,
                          name ? name : "?");
    for (size_t i = 0; i < ids->u.arr.n; i++) {
        int32_t id;
        if (!id_ok(tok, &ids->u.arr.items[i], &id))
            return kv_err_set(err, KV_EFORMAT, "%s: special token \"%.64s\": ids[%zu] is not an id in [0, %d)", where,
                              name, i, tok->n_ids);
        int rc = push(out, id, where, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int load_template(const kv_tokenizer *tok, const json_value *v, post_list *out, const char *where,
                         kv_err *err)
{
    const json_value *single = json_get(v, "single"), *specials = json_get(v, "special_tokens");
    if (!single || single->type != JSON_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "%s.single: expected an array", where);
    if (specials && specials->type != JSON_OBJECT && specials->type != JSON_NULL)
        return kv_err_set(err, KV_EFORMAT, "%s.special_tokens: expected an object", where);
    out->n = 0;
    for (size_t i = 0; i < single->u.arr.n; i++) {
        char sub[128];
        snprintf(sub, sizeof sub, "%s.single[%zu]", where, i);
        int rc = template_piece(tok, &single->u.arr.items[i], specials, out, sub, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Roberta / Bert: "cls": [token, id], "sep": [token, id]. */
static int load_cls_sep(const kv_tokenizer *tok, const json_value *v, post_list *out, const char *where, kv_err *err)
{
    int32_t id[2];
    static const char *const keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        const json_value *pair = json_get(v, keys[k]);
        if (!pair || pair->type != JSON_ARRAY || pair->u.arr.n != 2 || !id_ok(tok, &pair->u.arr.items[1], &id[k]))
            return kv_err_set(err, KV_EFORMAT, "%s.%s: expected [token, id] with an id in [0, %d)", where, keys[k],
                              tok->n_ids);
    }
    out->n = 0;
    int rc;
    if ((rc = push(out, id[0], where, err)) || (rc = push(out, TOK_POST_SEQUENCE, where, err)))
        return rc;
    return push(out, id[1], where, err);
}

/* cur = outer applied to cur (outer's sequence markers replaced by cur). */
static int compose(post_list *cur, const post_list *outer, const char *where, kv_err *err)
{
    post_list next = {.n = 0};
    for (size_t i = 0; i < outer->n; i++) {
        if (outer->item[i] != TOK_POST_SEQUENCE) {
            int rc = push(&next, outer->item[i], where, err);
            if (rc)
                return rc;
            continue;
        }
        for (size_t k = 0; k < cur->n; k++) {
            int rc = push(&next, cur->item[k], where, err);
            if (rc)
                return rc;
        }
    }
    *cur = next;
    return 0;
}

static int load_one(const kv_tokenizer *tok, const json_value *v, post_list *cur, const char *where, int depth,
                    kv_err *err)
{
    const char *type;
    int rc = tok_json_type(v, &type, where, err);
    if (rc)
        return rc;
    post_list outer = {.n = 0};
    if (!strcmp(type, "Sequence")) {
        const json_value *list = json_get(v, "processors");
        if (!list || list->type != JSON_ARRAY)
            return kv_err_set(err, KV_EFORMAT, "%s.processors: expected an array", where);
        if (depth > 4)
            return kv_err_set(err, KV_EFORMAT, "%s: Sequence nested too deep", where);
        for (size_t i = 0; i < list->u.arr.n; i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            if ((rc = load_one(tok, &list->u.arr.items[i], cur, sub, depth + 1, err)))
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel"))
        return 0;
    if (!strcmp(type, "TemplateProcessing"))
        rc = load_template(tok, v, &outer, where, err);
    else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing"))
        rc = load_cls_sep(tok, v, &outer, where, err);
    else
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: post-processor type '%s' is not supported", where, type);
    return rc ? rc : compose(cur, &outer, where, err);
}

int tok_post_processor_load(kv_tokenizer *tok, const json_value *v, kv_err *err)
{
    if (!v || v->type == JSON_NULL)
        return 0;
    post_list *cur = malloc(sizeof *cur);
    if (!cur)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    cur->item[0] = TOK_POST_SEQUENCE;
    cur->n = 1;
    int rc = load_one(tok, v, cur, "post_processor", 0, err);
    if (!rc) {
        tok->post = malloc((cur->n ? cur->n : 1) * sizeof *tok->post);
        if (!tok->post) {
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        } else {
            memcpy(tok->post, cur->item, cur->n * sizeof *tok->post);
            tok->n_post = cur->n;
            tok->has_post_processor = 1;
        }
    }
    free(cur);
    return rc;
}
