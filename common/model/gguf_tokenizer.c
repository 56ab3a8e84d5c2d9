/* tokenizer.json from a GGUF's tokenizer.ggml.* metadata, written as HF writes the file of
 * that model family:
 *   model "gpt2"  -> byte-level BPE; vocabulary, merges and added tokens from the file, the
 *                    normalizer / pre-tokenizer / post-processor / decoder that
 *                    tokenizer.ggml.pre names (llama.cpp's names: smollm, llama-bpe, ...);
 *   model "llama" -> SentencePiece-style BPE with byte fallback (Llama-2's file): merges from
 *                    the file, else derived from the vocabulary and scores (gguf_merges.c).
 * Token types (llama.cpp): 2 unknown, 3 control, 4 user-defined, 6 byte. */
#include <stdlib.h>
#include <string.h>

#include "gguf_import_internal.h"
#include "kv_utf8.h"
#include "synth_tokenizer.h" /* kv_synth_byte_codepoint: GPT-2's byte alphabet */

enum { TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4 };

static const char LLAMA3_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char QWEN2_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

#define BYTE_LEVEL(prefix, trim, regex)                                                              \
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": " #prefix ", \"trim_offsets\": " #trim ", \"use_regex\": " #regex "}"

/* A byte-level family: the JSON of each component (split: a regex Split comes first). */
typedef struct byte_family {
    const char *names[4];     /* tokenizer.ggml.pre values */
    const char *normalizer;
    const char *digits;       /* a pre-tokenizer before the byte-level one, or NULL */
    const char *split;        /* a regex Split before the byte-level one, or NULL */
    const char *byte_level;   /* the byte-level pre-tokenizer */
    const char *post;         /* post-processor when no BOS/EOS is added */
    const char *decoder;
    int ignore_merges;
} byte_family;

static const byte_family families[] = {
    /* SmolLM / SmolLM2: digits one by one, then GPT-2's regex. */
    {{"smollm"}, "null", "{\"type\": \"Digits\", \"individual_digits\": true}", NULL, BYTE_LEVEL(false, true, true),
     BYTE_LEVEL(true, false, true), BYTE_LEVEL(true, true, true), 0},
    /* Llama-3 (shared/models/tokenizers/llama3). */
    {{"llama-bpe", "llama3", "llama-v3"}, "null", NULL, LLAMA3_SPLIT, BYTE_LEVEL(false, true, false),
     BYTE_LEVEL(true, false, true), BYTE_LEVEL(true, true, true), 1},
    /* GPT-2's own file; llama.cpp's "default" is a GPT-2-style vocabulary too. */
    {{"gpt-2", "default"}, "null", NULL, NULL, BYTE_LEVEL(false, true, true), BYTE_LEVEL(true, false, true),
     BYTE_LEVEL(true, true, true), 0},
    /* Qwen2 / Qwen2.5. */
    {{"qwen2"}, "{\"type\": \"NFC\"}", NULL, QWEN2_SPLIT, BYTE_LEVEL(false, false, false),
     BYTE_LEVEL(false, false, false), BYTE_LEVEL(false, false, false), 0},
};

typedef struct tok_meta {
    const kv_gguf *g;
    const char *path;
    int spm;                  /* model "llama" */
    const byte_family *fam;   /* model "gpt2" */
    kv_gguf_str *tokens;      /* as the file spells them */
    kv_gguf_str *spelled;     /* vocabulary keys (byte-level: respelled into the byte alphabet) */
    char *respell_pool;
    size_t n;
    int64_t *types;           /* NULL when the file has none */
    kv_gguf_str *merges;      /* NULL when the file has none */
    size_t n_merges;
    float *scores;
    gguf_vocab *vocab;        /* over spelled */
    int add_bos, add_eos;
    int add_space_prefix;     /* SentencePiece: prepend "\u2581" (Llama-2) */
    int64_t bos, eos, unk;
} tok_meta;

static void tok_meta_free(tok_meta *m)
{
    free(m->tokens);
    free(m->spelled);
    free(m->respell_pool);
    free(m->types);
    free(m->merges);
    free(m->scores);
    gguf_vocab_free(m->vocab);
}

static int in_byte_alphabet(uint32_t cp) { return (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0x143); }

static int all_in_byte_alphabet(const kv_gguf_str *t)
{
    for (size_t i = 0; i < t->len;) {
        uint32_t cp;
        i += kv_utf8_next(t->s + i, t->len - i, &cp);
        if (!in_byte_alphabet(cp))
            return 0;
    }
    return 1;
}

/* HF spells a byte-level token that uses characters outside the byte alphabet (a raw space,
 * say) as the byte-level form of its UTF-8 bytes. */
static int respell(tok_meta *m, kv_err *err)
{
    m->spelled = malloc((m->n ? m->n : 1) * sizeof *m->spelled);
    if (!m->spelled)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    size_t pool = 0;
    for (size_t i = 0; i < m->n; i++)
        if (!m->spm && !all_in_byte_alphabet(&m->tokens[i]))
            pool += 2 * m->tokens[i].len; /* every byte becomes a 1- or 2-byte character */
    m->respell_pool = malloc(pool ? pool : 1);
    if (!m->respell_pool)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    char *at = m->respell_pool;
    for (size_t i = 0; i < m->n; i++) {
        m->spelled[i] = m->tokens[i];
        if (m->spm || all_in_byte_alphabet(&m->tokens[i]))
            continue;
        m->spelled[i].s = at;
        for (size_t k = 0; k < m->tokens[i].len; k++)
            at += kv_utf8_put(at, kv_synth_byte_codepoint((unsigned char)m->tokens[i].s[k]));
        m->spelled[i].len = (size_t)(at - m->spelled[i].s);
    }
    return KV_OK;
}

static int get_flag(const kv_gguf *g, const char *key, int dflt, int *out, kv_err *err)
{
    *out = dflt;
    return kv_gguf_find_key(g, key) < 0 ? KV_OK : kv_gguf_get_bool(g, key, out, err);
}

static int get_id(const tok_meta *m, const char *key, int64_t *out, kv_err *err)
{
    *out = -1;
    if (kv_gguf_find_key(m->g, key) < 0)
        return KV_OK;
    uint32_t v;
    int rc = kv_gguf_get_u32(m->g, key, &v, err);
    if (!rc && v >= m->n)
        rc = kv_err_set(err, KV_EFORMAT, "%s: %s = %u is not below the %zu tokens", m->path, key, v, m->n);
    if (!rc)
        *out = v;
    return rc;
}

static int choose_family(tok_meta *m, kv_err *err)
{
    kv_gguf_str model, pre = {"default", 7};
    int rc = kv_gguf_get_str(m->g, "tokenizer.ggml.model", &model, err);
    if (rc)
        return rc;
    if (model.len == 5 && !memcmp(model.s, "llama", 5)) {
        m->spm = 1;
        return KV_OK;
    }
    if (model.len != 4 || memcmp(model.s, "gpt2", 4))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)", m->path,
                          (int)(model.len > 32 ? 32 : model.len), model.s);
    if (kv_gguf_find_key(m->g, "tokenizer.ggml.pre") >= 0 && (rc = kv_gguf_get_str(m->g, "tokenizer.ggml.pre", &pre, err)))
        return rc;
    for (size_t f = 0; f < sizeof families / sizeof *families; f++)
        for (int k = 0; k < 4 && families[f].names[k]; k++)
            if (strlen(families[f].names[k]) == pre.len && !memcmp(families[f].names[k], pre.s, pre.len)) {
                m->fam = &families[f];
                return KV_OK;
            }
    return kv_err_set(err, KV_EUNSUPPORTED,
                      "%s: tokenizer.ggml.pre '%.*s' is not supported (smollm, llama-bpe, llama3, llama-v3, gpt-2, "
                      "default, qwen2)", m->path, (int)(pre.len > 32 ? 32 : pre.len), pre.s);
}

static int read_meta(tok_meta *m, kv_err *err)
{
    int rc = choose_family(m, err);
    if (rc || (rc = kv_gguf_get_str_array(m->g, "tokenizer.ggml.tokens", &m->tokens, &m->n, err)))
        return rc;
    if (m->n == 0)
        return kv_err_set(err, KV_EFORMAT, "%s: tokenizer.ggml.tokens is empty", m->path);
    for (size_t i = 0; i < m->n; i++)
        if (kv_utf8_invalid_at(m->tokens[i].s, m->tokens[i].len) != m->tokens[i].len || !m->tokens[i].len)
            return kv_err_set(err, KV_EFORMAT, "%s: token %zu is %s", m->path, i,
                              m->tokens[i].len ? "not valid UTF-8" : "empty");
    size_t n;
    if (kv_gguf_find_key(m->g, "tokenizer.ggml.token_type") >= 0) {
        if ((rc = kv_gguf_get_int_array(m->g, "tokenizer.ggml.token_type", &m->types, &n, err)))
            return rc;
        if (n != m->n)
            return kv_err_set(err, KV_EFORMAT, "%s: %zu token types for %zu tokens", m->path, n, m->n);
    }
    if (kv_gguf_find_key(m->g, "tokenizer.ggml.merges") >= 0 &&
        (rc = kv_gguf_get_str_array(m->g, "tokenizer.ggml.merges", &m->merges, &m->n_merges, err)))
        return rc;
    if (kv_gguf_find_key(m->g, "tokenizer.ggml.scores") >= 0) {
        if ((rc = kv_gguf_get_float_array(m->g, "tokenizer.ggml.scores", &m->scores, &n, err)))
            return rc;
        if (n != m->n)
            return kv_err_set(err, KV_EFORMAT, "%s: %zu token scores for %zu tokens", m->path, n, m->n);
    }
    if (!m->merges && !(m->spm && m->scores))
        return kv_err_set(err, KV_EFORMAT, "%s: no tokenizer.ggml.merges%s", m->path,
                          m->spm ? " and no tokenizer.ggml.scores to derive them from" : "");
    if ((rc = get_flag(m->g, "tokenizer.ggml.add_bos_token", m->spm, &m->add_bos, err)) ||
        (rc = get_flag(m->g, "tokenizer.ggml.add_eos_token", 0, &m->add_eos, err)) ||
        (rc = get_flag(m->g, "tokenizer.ggml.add_space_prefix", 1, &m->add_space_prefix, err)) ||
        (rc = get_id(m, "tokenizer.ggml.bos_token_id", &m->bos, err)) ||
        (rc = get_id(m, "tokenizer.ggml.eos_token_id", &m->eos, err)) ||
        (rc = get_id(m, "tokenizer.ggml.unknown_token_id", &m->unk, err)))
        return rc;
    if ((m->add_bos && m->bos < 0) || (m->add_eos && m->eos < 0))
        return kv_err_set(err, KV_EFORMAT, "%s: add_%s_token is set but there is no %s_token_id", m->path,
                          m->add_bos && m->bos < 0 ? "bos" : "eos", m->add_bos && m->bos < 0 ? "bos" : "eos");
    if ((rc = respell(m, err)))
        return rc;
    return gguf_vocab_build(m->spelled, m->n, &m->vocab, err);
}

/* ---- the document ---- */

static void put_str(kv_textbuf *b, const kv_gguf_str *s) { kv_textbuf_json_string(b, s->s, s->len); }

static void added_tokens(const tok_meta *m, kv_textbuf *b)
{
    kv_textbuf_puts(b, "  \"added_tokens\": [");
    int first = 1;
    for (size_t i = 0; m->types && i < m->n; i++) {
        int64_t t = m->types[i];
        /* HF adds control and user-defined tokens; SentencePiece files also mark <unk>
         * "unknown", which Llama-2's file lists as special too. A byte-level token spelled
         * outside the byte alphabet is a llama.cpp mislabel HF skips. */
        if (!(t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED || (m->spm && t == TOKEN_UNKNOWN)))
            continue;
        if (!gguf_vocab_is_canonical(m->vocab, i) || (!m->spm && m->spelled[i].s != m->tokens[i].s))
            continue;
        kv_textbuf_printf(b, "%s\n    {\"id\": %zu, \"content\": ", first ? "" : ",", i);
        put_str(b, &m->tokens[i]);
        kv_textbuf_printf(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                             "\"special\": %s}",
                          t == TOKEN_USER_DEFINED ? "false" : "true");
        first = 0;
    }
    kv_textbuf_puts(b, first ? "],\n" : "\n  ],\n");
}

/* One sequence of a template: [BOS] SEQ [EOS], each piece with the sequence's type id. */
static void template_sequence(const tok_meta *m, kv_textbuf *b, const char *seq, int type_id)
{
    const int64_t ids[2] = {m->add_bos ? m->bos : -1, m->add_eos ? m->eos : -1};
    if (ids[0] >= 0) {
        kv_textbuf_puts(b, "{\"SpecialToken\": {\"id\": ");
        put_str(b, &m->tokens[ids[0]]);
        kv_textbuf_printf(b, ", \"type_id\": %d}}, ", type_id);
    }
    kv_textbuf_printf(b, "{\"Sequence\": {\"id\": \"%s\", \"type_id\": %d}}", seq, type_id);
    if (ids[1] >= 0) {
        kv_textbuf_puts(b, ", {\"SpecialToken\": {\"id\": ");
        put_str(b, &m->tokens[ids[1]]);
        kv_textbuf_printf(b, ", \"type_id\": %d}}", type_id);
    }
}

static void special_entry(kv_textbuf *b, const tok_meta *m, int64_t id)
{
    put_str(b, &m->tokens[id]);
    kv_textbuf_puts(b, ": {\"id\": ");
    put_str(b, &m->tokens[id]);
    kv_textbuf_printf(b, ", \"ids\": [%lld], \"tokens\": [", (long long)id);
    put_str(b, &m->tokens[id]);
    kv_textbuf_puts(b, "]}");
}

/* BOS/EOS around each sequence as HF's TemplateProcessing writes it (Llama-2's file). */
static void template_processing(const tok_meta *m, kv_textbuf *b)
{
    kv_textbuf_puts(b, "{\"type\": \"TemplateProcessing\", \"single\": [");
    template_sequence(m, b, "A", 0);
    kv_textbuf_puts(b, "], \"pair\": [");
    template_sequence(m, b, "A", 0);
    kv_textbuf_puts(b, ", ");
    template_sequence(m, b, "B", 1);
    kv_textbuf_puts(b, "], \"special_tokens\": {");
    if (m->add_bos)
        special_entry(b, m, m->bos);
    if (m->add_eos && !(m->add_bos && m->eos == m->bos)) {
        kv_textbuf_puts(b, m->add_bos ? ", " : "");
        special_entry(b, m, m->eos);
    }
    kv_textbuf_puts(b, "}}");
}

static void pipeline(const tok_meta *m, kv_textbuf *b)
{
    if (m->spm) {
        const int prefix = m->add_space_prefix;
        kv_textbuf_printf(b, "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [%s"
                             "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},\n"
                             "  \"pre_tokenizer\": null,\n  \"post_processor\": ",
                          prefix ? "{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}, " : "");
        if (m->add_bos || m->add_eos)
            template_processing(m, b);
        else
            kv_textbuf_puts(b, "null");
        kv_textbuf_printf(b, ",\n  \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
                             "{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"}, "
                             "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}%s]},\n",
                          prefix ? ", {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}" : "");
        return;
    }
    const byte_family *f = m->fam;
    kv_textbuf_printf(b, "  \"normalizer\": %s,\n  \"pre_tokenizer\": ", f->normalizer);
    if (f->digits || f->split) {
        kv_textbuf_puts(b, "{\"type\": \"Sequence\", \"pretokenizers\": [");
        if (f->digits)
            kv_textbuf_printf(b, "%s, ", f->digits);
        if (f->split) {
            kv_textbuf_puts(b, "{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
            kv_textbuf_json_string(b, f->split, strlen(f->split));
            kv_textbuf_puts(b, "}, \"behavior\": \"Isolated\", \"invert\": false}, ");
        }
        kv_textbuf_printf(b, "%s]}", f->byte_level);
    } else {
        kv_textbuf_puts(b, f->byte_level);
    }
    kv_textbuf_puts(b, ",\n  \"post_processor\": ");
    if (m->add_bos || m->add_eos)
        template_processing(m, b);
    else
        kv_textbuf_puts(b, f->post);
    kv_textbuf_printf(b, ",\n  \"decoder\": %s,\n", f->decoder);
}

static int merges_from_file(const tok_meta *m, kv_textbuf *b, kv_err *err)
{
    for (size_t i = 0; i < m->n_merges; i++) {
        const kv_gguf_str *s = &m->merges[i];
        const char *sp = memchr(s->s, ' ', s->len);
        if (!sp || memchr(sp + 1, ' ', s->len - (size_t)(sp + 1 - s->s)) ||
            kv_utf8_invalid_at(s->s, s->len) != s->len)
            return kv_err_set(err, KV_EFORMAT, "%s: tokenizer.ggml.merges[%zu] is not two tokens separated by one space",
                              m->path, i);
        kv_textbuf_puts(b, i ? ",\n      [" : "\n      [");
        kv_textbuf_json_string(b, s->s, (size_t)(sp - s->s));
        kv_textbuf_puts(b, ", ");
        kv_textbuf_json_string(b, sp + 1, s->len - (size_t)(sp + 1 - s->s));
        kv_textbuf_puts(b, "]");
    }
    return KV_OK;
}

static int merges_derived(const tok_meta *m, kv_textbuf *b, kv_err *err)
{
    gguf_merge *mg;
    size_t n;
    int rc = gguf_spm_merges(m->spelled, m->scores, m->n, m->vocab, &mg, &n, err);
    if (rc)
        return kv_err_wrap(err, "%s", m->path);
    for (size_t i = 0; i < n; i++) {
        const kv_gguf_str *t = &m->spelled[mg[i].token];
        kv_textbuf_puts(b, i ? ",\n      [" : "\n      [");
        kv_textbuf_json_string(b, t->s, mg[i].split);
        kv_textbuf_puts(b, ", ");
        kv_textbuf_json_string(b, t->s + mg[i].split, t->len - mg[i].split);
        kv_textbuf_puts(b, "]");
    }
    free(mg);
    return KV_OK;
}

static int model(const tok_meta *m, kv_textbuf *b, kv_err *err)
{
    kv_textbuf_puts(b, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": ");
    if (m->spm && m->unk >= 0)
        put_str(b, &m->tokens[m->unk]);
    else
        kv_textbuf_puts(b, "null");
    kv_textbuf_printf(b, ",\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                         "    \"fuse_unk\": %s,\n    \"byte_fallback\": %s,\n    \"ignore_merges\": %s,\n"
                         "    \"vocab\": {",
                      m->spm ? "true" : "false", m->spm ? "true" : "false",
                      !m->spm && m->fam->ignore_merges ? "true" : "false");
    int first = 1;
    for (size_t i = 0; i < m->n; i++) {
        if (!gguf_vocab_is_canonical(m->vocab, i)) /* a repeated spelling: the last id wins */
            continue;
        kv_textbuf_puts(b, first ? "\n      " : ",\n      ");
        put_str(b, &m->spelled[i]);
        kv_textbuf_printf(b, ": %zu", i);
        first = 0;
    }
    kv_textbuf_puts(b, "\n    },\n    \"merges\": [");
    int rc = m->merges ? merges_from_file(m, b, err) : merges_derived(m, b, err);
    kv_textbuf_puts(b, "\n    ]\n  }\n}\n");
    return rc;
}

int gguf_tokenizer_json(const kv_gguf *g, kv_textbuf *b, kv_err *err)
{
    tok_meta m = {.g = g, .path = kv_gguf_path(g)};
    int rc = read_meta(&m, err);
    if (rc == KV_OK) {
        kv_textbuf_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
        added_tokens(&m, b);
        pipeline(&m, b);
        rc = model(&m, b, err);
    }
    tok_meta_free(&m);
    return rc;
}
