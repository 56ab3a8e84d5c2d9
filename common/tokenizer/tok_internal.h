/* Private layout of kv_tokenizer and the functions the tokenizer's source files share.
 * A loaded tokenizer is immutable, so one instance may encode/decode from many threads;
 * everything an encode call mutates lives in its own scratch structs. */
#ifndef KV_TOK_INTERNAL_H
#define KV_TOK_INTERNAL_H

#include "json.h"
#include "tok_regex.h"
#include "tok_merge_map.h"
#include "tok_str_map.h"
#include "tok_utf8.h"
#include "tok_vec.h"
#include "tokenizer.h"

/* Ids above this are refused: n_ids sizes per-id arrays, so a stray huge id in a malformed
 * file must not turn into a huge allocation. */
#define TOK_MAX_ID (1 << 22)

enum { TOK_ID_VOCAB = 1, TOK_ID_ADDED = 2, TOK_ID_SPECIAL = 4 };

typedef struct {
    const char *content; /* in the string pool */
    size_t len;
    char *match;         /* searched text: content, normalized when `normalized` (malloc'd) */
    size_t match_len;
    int32_t id;
    unsigned char special, lstrip, rstrip, single_word, normalized;
} tok_added;

/* The added tokens searched in one pass, grouped by first byte, longest first. */
typedef struct {
    uint32_t *order; /* indices into tok->added */
    uint32_t start[257];
} tok_added_index;

typedef enum { TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_UNICODE, TOK_NORM_LOWERCASE, TOK_NORM_STRIP } tok_norm_kind;
typedef struct {
    tok_norm_kind kind;
    pcre2_code *re;          /* Replace: its pattern (a String pattern compiled as a literal) */
    char *to;                /* Prepend text / Replace content (malloc'd) */
    size_t to_len;
    tok_unicode_form form;   /* NFC, NFD, NFKC, NFKD */
    int strip_left, strip_right;
} tok_norm_step;

/* How a Split keeps the pattern's matches (HF SplitDelimiterBehavior). */
typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS
} tok_split_behavior;
/* What a character-class split matches, one character at a time. */
typedef enum { TOK_CHARS_NUMERIC, TOK_CHARS_PUNCTUATION, TOK_CHARS_SPACE, TOK_CHARS_ONE } tok_char_class;
typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend_scheme;

typedef enum { TOK_PRE_SPLIT, TOK_PRE_CHARS, TOK_PRE_BYTE_LEVEL, TOK_PRE_METASPACE } tok_pre_kind;
typedef struct {
    tok_pre_kind kind;
    pcre2_code *re;              /* Split pattern, or ByteLevel's GPT-2 regex when use_regex */
    tok_split_behavior behavior; /* Split, CHARS */
    int invert;                  /* Split */
    tok_char_class chars;        /* CHARS: Digits, Punctuation, WhitespaceSplit */
    int add_prefix_space;        /* ByteLevel */
    char replacement[4];         /* Metaspace: one character */
    size_t replacement_len;
    uint32_t replacement_cp;
    tok_prepend_scheme prepend;
    int split;
} tok_pre_step;

/* GPT-2's reversible byte <-> printable character mapping. */
typedef struct {
    char utf8[256][2];
    unsigned char utf8_len[256];
    int16_t byte_of[324]; /* code point -> byte, -1 if not a mapped character */
} tok_byte_level;

struct kv_tokenizer {
    int32_t n_ids;
    char *pool;             /* vocab strings and added-token contents, NUL-terminated */
    const char **id_str;    /* per id: its token string (added content wins), or NULL */
    uint32_t *id_len;
    unsigned char *id_flags; /* TOK_ID_* */

    /* BPE model */
    tok_str_map vocab;
    tok_merge_map merges;
    int32_t unk_id; /* -1: characters with no token are dropped (as HF does) */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256]; /* the <0xAB> token of each byte, or -1 */

    tok_added *added;
    size_t n_added;
    tok_str_map added_map;
    tok_added_index match_raw;        /* normalized == false: matched on the input text */
    tok_added_index match_normalized; /* normalized == true: matched after normalization */
    pcre2_code *word_re; /* a word character, for single_word tokens (NULL if there are none) */

    tok_norm_step *norm;
    size_t n_norm;
    tok_pre_step *pre;
    size_t n_pre;
    tok_byte_level byte_level;

    /* decoder: id i decodes to the bytes dec_pool[dec_off[i] .. dec_off[i+1]); as the first
     * token of a stream, to dec_first_pool[dec_first_off[i] ..) when dec_first_pool is set
     * (a Metaspace decoder drops its replacement character in the first token) */
    char *dec_pool;
    uint32_t *dec_off;
    char *dec_first_pool;
    uint32_t *dec_first_off;
    int dec_join_space;       /* no decoder: HF joins tokens with " " */
    char strip_first[4];      /* Strip after Fuse: drop this leading character once */
    size_t strip_first_len;

    /* post-processor: encode with special tokens emits post[], where TOK_POST_SEQUENCE stands
     * for the text's ids */
    int32_t *post;
    size_t n_post;
    int has_post_processor;

    /* tokenizer_config.json (absent: all unset) */
    char *bos_token, *eos_token; /* malloc'd, or NULL */
    int32_t bos_id, eos_id;      /* -1 when none or not a known token */
    int cfg_add_bos, cfg_add_eos;
    int has_config;              /* tokenizer_config.json was read */
};

#define TOK_POST_SEQUENCE (-1)
/* Bounds what a (nested) post-processor may put around a sequence. */
#define TOK_POST_MAX 256

/* tok_json.c: typed access with messages that name the field. `where` names the object. */
int tok_json_opt_bool(const json_value *obj, const char *key, int def, int *out, const char *where,
                      kv_err *err);
/* Required string member; *out points into the JSON doc. */
int tok_json_string(const json_value *obj, const char *key, const char **out, size_t *len,
                    const char *where, kv_err *err);
/* The "type" member of a component object (normalizer, decoder, ...). */
int tok_json_type(const json_value *obj, const char **type, const char *where, kv_err *err);
/* The "pattern" member, {"String": s} (a literal) or {"Regex": r}, compiled. */
int tok_json_pattern(const json_value *obj, pcre2_code **re, const char *where, kv_err *err);
/* Copies n bytes into a fresh NUL-terminated buffer (NULL on ENOMEM). */
char *tok_strndup(const char *s, size_t n);

/* normalize.c */
int tok_normalizer_load(kv_tokenizer *tok, const json_value *v, kv_err *err);
void tok_normalizer_free(kv_tokenizer *tok);
/* out = normalized s (replaced, not appended). Returns 0 or a kv_code (KV_ENOMEM, or
 * KV_ERANGE when a Replace regex hits PCRE2's match limits). */
int tok_normalize(const kv_tokenizer *tok, const char *s, size_t n, tok_buf *out, kv_err *err);

/* pretokenize.c */
int tok_pre_tokenizer_load(kv_tokenizer *tok, const json_value *v, kv_err *err);
void tok_pre_tokenizer_free(kv_tokenizer *tok);
typedef struct {
    tok_buf text[2];
    tok_spans spans[2];
    tok_spans matches;
    tok_marks marks;
    pcre2_match_data *md;
} tok_pre_scratch;
void tok_pre_scratch_free(tok_pre_scratch *sc);
/* Splits s into pre-tokens: on success *text holds their bytes and *pieces their spans
 * (both owned by sc, valid until the next call). at_start: s begins the whole input text
 * (what Metaspace's prepend_scheme "first" asks of a piece). */
int tok_pretokenize(const kv_tokenizer *tok, tok_pre_scratch *sc, const char *s, size_t n, int at_start,
                    const tok_buf **text, const tok_spans **pieces, kv_err *err);

/* byte_level.c */
void tok_byte_level_init(tok_byte_level *t);

/* added_tokens.c */
int tok_added_load(kv_tokenizer *tok, const json_value *arr, char **pool_at, kv_err *err);
/* Builds match_raw / match_normalized; needs the normalizer loaded. */
int tok_added_index_build(kv_tokenizer *tok, kv_err *err);
void tok_added_free(kv_tokenizer *tok);
/* Leftmost, then longest, added token in s[from..n). Returns 1 with the span it consumes
 * (lstrip/rstrip whitespace included) and its id, or 0 when there is none. */
int tok_added_find(const kv_tokenizer *tok, const tok_added_index *ix, const char *s, size_t n,
                   size_t from, size_t *start, size_t *end, int32_t *id);

/* bpe.c */
typedef struct {
    uint32_t rank, pos;
    int32_t merged;
} tok_bpe_merge;
typedef struct {
    int32_t *sym, *prev, *next; /* symbol list; sym -1 once merged into its left neighbour */
    size_t cap;
    tok_bpe_merge *heap;
    size_t heap_len, heap_cap;
} tok_bpe_scratch;
void tok_bpe_scratch_free(tok_bpe_scratch *sc);
/* Appends the ids of one pre-token. Returns 0 or KV_ENOMEM. */
int tok_bpe_word(const kv_tokenizer *tok, tok_bpe_scratch *sc, const char *w, size_t n, tok_ids *out);

/* decode.c: parses the decoder and precomputes each id's decoded bytes (needs id_str). */
int tok_decoder_load(kv_tokenizer *tok, const json_value *v, kv_err *err);

/* postprocess.c: the post_processor (needs the vocab and added tokens). */
int tok_post_processor_load(kv_tokenizer *tok, const json_value *v, kv_err *err);

/* tok_config.c: tokenizer_config.json beside the tokenizer.json at `path`, if there is one
 * (needs the vocab and added tokens); then, without a post_processor, post[] from its
 * add_bos_token / add_eos_token. */
int tok_config_load(kv_tokenizer *tok, const char *path, kv_err *err);

#endif
