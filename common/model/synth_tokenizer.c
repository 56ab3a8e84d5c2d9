#include "synth_tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Llama-3's pre-tokenizer split pattern (as a C string: one backslash per regex escape). */
static const char kLlama3Regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* English letters by frequency, so the first merges are the most useful ones. */
static const char kLettersByFreq[] = "etaoinshrdlcumwfgypbvkjxqz";
static const char kCapitals[] = "TAISWHMOBC";
static const char *const kBigrams[] = {
    "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of",
    "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le",
    "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "li", "ch", "ll",
    "be", "ma", "si", "om", "ur",
};
/* Word-like growth alternates vowels and consonants. */
static const char kVowels[] = "eaoiu";
static const char kConsonants[] = "tnshrdlcmwfgpbvky";
#define KV_EXTENSIONS_PER_ROUND 2
#define KV_MAX_TOKEN_BYTES 64

unsigned kv_synth_byte_codepoint(unsigned char b)
{
    /* GPT-2 keeps '!'..'~', U+00A1..U+00AC and U+00AE..U+00FF as themselves and numbers the
     * remaining 68 bytes (controls, space, DEL, NBSP, soft hyphen) from U+0100 in byte order. */
#define KV_BYTE_PRINTABLE(c) (((c) >= 0x21 && (c) <= 0x7e) || ((c) >= 0xa1 && (c) <= 0xac) || (c) >= 0xae)
    if (KV_BYTE_PRINTABLE(b))
        return b;
    unsigned k = 0;
    for (unsigned c = 0; c < b; c++)
        k += !KV_BYTE_PRINTABLE(c);
    return 256 + k;
#undef KV_BYTE_PRINTABLE
}

/* The vocabulary under construction: token strings in one arena, a hash index for the
 * no-duplicates rule, and each merged token's two parts. */
typedef struct vocab_builder {
    kv_textbuf arena;
    size_t *off;
    uint32_t *len;
    int32_t *left, *right;     /* merge parts of id (valid for id >= 256) */
    int count, target;
    int32_t *slots;            /* open addressing: token id or -1 */
    size_t n_slots;            /* power of two, > 2 * target */
} vocab_builder;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static const char *vb_str(const vocab_builder *vb, int id) { return vb->arena.data + vb->off[id]; }

/* Slot holding s, or the empty slot where it would go. */
static size_t vb_slot(const vocab_builder *vb, const char *s, size_t n)
{
    size_t mask = vb->n_slots - 1, i = (size_t)hash_bytes(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t id = vb->slots[i];
        if (id < 0 || (vb->len[id] == n && !memcmp(vb_str(vb, id), s, n)))
            return i;
    }
}

static int vb_find(const vocab_builder *vb, const char *s, size_t n)
{
    return vb->slots[vb_slot(vb, s, n)];
}

static int vb_init(vocab_builder *vb, int target, kv_err *err)
{
    memset(vb, 0, sizeof *vb);
    kv_textbuf_init(&vb->arena);
    vb->target = target;
    vb->n_slots = 1;
    while (vb->n_slots <= 2 * (size_t)target)
        vb->n_slots *= 2;
    vb->off = malloc((size_t)target * sizeof *vb->off);
    vb->len = malloc((size_t)target * sizeof *vb->len);
    vb->left = malloc((size_t)target * sizeof *vb->left);
    vb->right = malloc((size_t)target * sizeof *vb->right);
    vb->slots = malloc(vb->n_slots * sizeof *vb->slots);
    if (!vb->off || !vb->len || !vb->left || !vb->right || !vb->slots)
        return kv_err_set(err, KV_ENOMEM, "tokenizer: out of memory for %d tokens", target);
    memset(vb->slots, 0xff, vb->n_slots * sizeof *vb->slots);
    return KV_OK;
}

static void vb_free(vocab_builder *vb)
{
    kv_textbuf_free(&vb->arena);
    free(vb->off);
    free(vb->len);
    free(vb->left);
    free(vb->right);
    free(vb->slots);
}

static int vb_full(const vocab_builder *vb) { return vb->count >= vb->target; }

/* Adds s as the next id (the caller checked it is new and there is room). */
static int vb_add(vocab_builder *vb, const char *s, size_t n, int left, int right, kv_err *err)
{
    size_t slot = vb_slot(vb, s, n);
    vb->off[vb->count] = vb->arena.len;
    kv_textbuf_append(&vb->arena, s, n);
    kv_textbuf_append(&vb->arena, "", 1); /* NUL-separated: tokens print as C strings */
    if (kv_textbuf_failed(&vb->arena))
        return kv_err_set(err, KV_ENOMEM, "tokenizer: out of memory");
    vb->len[vb->count] = (uint32_t)n;
    vb->left[vb->count] = left;
    vb->right[vb->count] = right;
    vb->slots[slot] = vb->count++;
    return KV_OK;
}

/* Merges tokens a and b into a new token unless a+b already exists, is too long, or the
 * vocabulary is full. Returns 1 if added, 0 if skipped, negative on error. */
static int vb_merge(vocab_builder *vb, int a, int b, kv_err *err)
{
    if (vb_full(vb) || a < 0 || b < 0)
        return 0;
    char s[KV_MAX_TOKEN_BYTES];
    size_t na = vb->len[a], nb = vb->len[b];
    if (na + nb > sizeof s)
        return 0;
    memcpy(s, vb_str(vb, a), na);
    memcpy(s + na, vb_str(vb, b), nb);
    if (vb_find(vb, s, na + nb) >= 0)
        return 0;
    int rc = vb_add(vb, s, na + nb, a, b, err);
    return rc ? rc : 1;
}

static int byte_id(unsigned char c) { return c; } /* byte tokens sit at their byte value */

static int ends_with_vowel(const vocab_builder *vb, int id)
{
    char last = vb_str(vb, id)[vb->len[id] - 1];
    return last != '\0' && strchr(kVowels, last) != NULL;
}

static int build_vocab(vocab_builder *vb, kv_err *err)
{
    int rc;
    for (int b = 0; b < 256; b++) {
        unsigned cp = kv_synth_byte_codepoint((unsigned char)b);
        char s[2];
        size_t n = 0;
        if (cp < 0x80) {
            s[n++] = (char)cp;
        } else {
            s[n++] = (char)(0xc0 | (cp >> 6));
            s[n++] = (char)(0x80 | (cp & 0x3f));
        }
        if ((rc = vb_add(vb, s, n, -1, -1, err)))
            return rc;
    }
    int space = byte_id(' ');
    for (const char *c = kLettersByFreq; *c; c++)      /* word starts: "Ġe", "Ġt", ... */
        if ((rc = vb_merge(vb, space, byte_id((unsigned char)*c), err)) < 0)
            return rc;
    for (const char *c = kCapitals; *c; c++)           /* sentence starts: "ĠT", ... */
        if ((rc = vb_merge(vb, space, byte_id((unsigned char)*c), err)) < 0)
            return rc;
    for (size_t k = 0; k < sizeof kBigrams / sizeof *kBigrams; k++)
        if ((rc = vb_merge(vb, byte_id((unsigned char)kBigrams[k][0]),
                           byte_id((unsigned char)kBigrams[k][1]), err)) < 0)
            return rc;
    /* Grow every merged token by one letter per round, alternating vowels and consonants
     * (with a per-token rotation so siblings differ). The longest token plus a letter is
     * always new, so each round adds at least one token and this terminates. */
    for (int round = 0; !vb_full(vb); round++) {
        int end = vb->count, added = 0;
        for (int t = 256; t < end && !vb_full(vb); t++) {
            const char *letters = ends_with_vowel(vb, t) ? kConsonants : kVowels;
            size_t nl = strlen(letters), start = ((size_t)t * 7 + (size_t)round * 3) % nl;
            int made = 0;
            for (size_t j = 0; j < nl && made < KV_EXTENSIONS_PER_ROUND; j++) {
                rc = vb_merge(vb, t, byte_id((unsigned char)letters[(start + j) % nl]), err);
                if (rc < 0)
                    return rc;
                made += rc;
            }
            added += made;
        }
        if (!added && !vb_full(vb))
            return kv_err_set(err, KV_ESTATE, "tokenizer: vocabulary growth stalled at %d tokens",
                              vb->count);
    }
    return KV_OK;
}

static void json_special(kv_textbuf *out, int id, const char *content, int last)
{
    kv_textbuf_printf(out, "    {\"id\": %d, \"content\": ", id);
    kv_textbuf_json_string(out, content, strlen(content));
    kv_textbuf_printf(out, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                           "\"normalized\": false, \"special\": true}%s\n", last ? "" : ",");
}

static void write_json(const vocab_builder *vb, int vocab_size, kv_textbuf *out)
{
    kv_textbuf_puts(out, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
                         "  \"added_tokens\": [\n");
    json_special(out, vocab_size - 2, KV_SYNTH_BOS_TEXT, 0);
    json_special(out, vocab_size - 1, KV_SYNTH_EOS_TEXT, 1);
    kv_textbuf_puts(out, "  ],\n  \"normalizer\": null,\n"
                         "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
                         "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    kv_textbuf_json_string(out, kLlama3Regex, strlen(kLlama3Regex));
    kv_textbuf_puts(out, "}, \"behavior\": \"Isolated\", \"invert\": false},\n"
                         "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                         "\"trim_offsets\": true, \"use_regex\": false}\n  ]},\n"
                         "  \"post_processor\": null,\n"
                         "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
                         "\"trim_offsets\": true, \"use_regex\": true},\n"
                         "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
                         "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
                         "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
                         "    \"byte_fallback\": false,\n    \"ignore_merges\": true,\n"
                         "    \"vocab\": {\n");
    for (int id = 0; id < vb->count; id++) {
        kv_textbuf_puts(out, "      ");
        kv_textbuf_json_string(out, vb_str(vb, id), vb->len[id]);
        kv_textbuf_printf(out, ": %d%s\n", id, id + 1 < vb->count ? "," : "");
    }
    kv_textbuf_puts(out, "    },\n    \"merges\": [\n");
    for (int id = 256; id < vb->count; id++) {
        /* "X Y": the parts never contain a space (byte 0x20 is spelled "Ġ"). */
        char pair[2 * KV_MAX_TOKEN_BYTES + 1];
        size_t nl = vb->len[vb->left[id]], nr = vb->len[vb->right[id]];
        memcpy(pair, vb_str(vb, vb->left[id]), nl);
        pair[nl] = ' ';
        memcpy(pair + nl + 1, vb_str(vb, vb->right[id]), nr);
        kv_textbuf_puts(out, "      ");
        kv_textbuf_json_string(out, pair, nl + 1 + nr);
        kv_textbuf_puts(out, id + 1 < vb->count ? ",\n" : "\n");
    }
    kv_textbuf_puts(out, "    ]\n  }\n}\n");
}

int kv_synth_tokenizer_json(int vocab_size, kv_textbuf *out, kv_err *err)
{
    if (vocab_size < KV_SYNTH_MIN_VOCAB)
        return kv_err_set(err, KV_EINVAL,
                          "vocab size %d is too small for a byte-level tokenizer (minimum %d: "
                          "256 byte tokens + 2 specials)", vocab_size, KV_SYNTH_MIN_VOCAB);
    vocab_builder vb;
    int rc = vb_init(&vb, vocab_size - 2, err);
    if (rc == KV_OK)
        rc = build_vocab(&vb, err);
    if (rc == KV_OK) {
        write_json(&vb, vocab_size, out);
        if (kv_textbuf_failed(out))
            rc = kv_err_set(err, KV_ENOMEM, "tokenizer: out of memory writing tokenizer.json");
    }
    vb_free(&vb);
    return rc;
}
