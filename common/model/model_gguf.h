/* The GGUF side of model loading: a GGUF's config.json, built in memory from its llama.*
 * metadata by the importer's own code (gguf_config_json), so a GGUF loaded directly and the
 * directory `kvctl model import` makes of it (default f32) have the same config text, hence
 * the same kv_model_fingerprint. */
#ifndef KV_MODEL_GGUF_H
#define KV_MODEL_GGUF_H

#include <stddef.h>

#include "gguf.h"
#include "kv_err.h"

/* *text (malloc'd, NUL-terminated, *len bytes): the config.json of g. */
int kv_model_gguf_config(const kv_gguf *g, char **text, size_t *len, kv_err *err);
/* The same for the file at path (opened and closed here). */
int kv_model_gguf_config_file(const char *path, char **text, size_t *len, kv_err *err);
/* Writes the tokenizer.json and tokenizer_config.json `kvctl model import` would write for
 * the GGUF at path into dir (an existing directory): for loaders that read a model
 * directory's tokenizer files (the prompt encoder of kvctl generate --local). */
int kv_model_gguf_write_tokenizer(const char *path, const char *dir, kv_err *err);
/* The HF row r of a Q (heads = n_heads) or K (n_kv_heads) projection of `rows` rows is the
 * GGUF's row kv_model_gguf_source_row(r, rows, heads); heads 0: r itself. */
uint64_t kv_model_gguf_source_row(uint64_t r, uint64_t rows, int heads);

#endif
