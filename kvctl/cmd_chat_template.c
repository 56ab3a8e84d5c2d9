/* kvctl chat-template --model DIR --messages FILE [--tools FILE] [--no-generation-prompt]:
 * prints the model's chat template rendered over the messages, byte for byte (nothing added). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "kv_file.h"
#include "kvctl_cmds.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvctl chat-template --model DIR --messages FILE [--tools FILE] [--no-generation-prompt]\n"
            "  Renders the model's chat template (DIR/tokenizer_config.json) as transformers'\n"
            "  apply_chat_template does, and prints the prompt to stdout exactly (no newline added).\n"
            "  --model DIR              model directory (tokenizer_config.json)\n"
            "  --messages FILE          JSON: an array of messages, or an object with \"messages\"\n"
            "                           (and optionally \"tools\")\n"
            "  --tools FILE             JSON array of tool schemas (overrides the messages file's)\n"
            "  --no-generation-prompt   render without add_generation_prompt\n"
            "  --help                   show this help\n"
            "  Exits 1 with the template's message on stderr when the template raises.\n");
}

typedef struct json_file {
    char *text;
    json_doc *doc;
} json_file;

static int read_json_file(const char *path, json_file *f)
{
    size_t len;
    kv_err err = {0};
    if (kv_file_read_all(path, &f->text, &len, &err)) {
        fprintf(stderr, "kvctl chat-template: %s\n", err.msg);
        return 1;
    }
    f->doc = json_parse(f->text, len, &err);
    if (!f->doc) {
        fprintf(stderr, "kvctl chat-template: %s: %s\n", path, err.msg);
        return 1;
    }
    return 0;
}

static void free_json_file(json_file *f)
{
    json_doc_free(f->doc);
    free(f->text);
}

int kvctl_cmd_chat_template(int argc, char **argv)
{
    const char *model = NULL, *messages_path = NULL, *tools_path = NULL;
    int gen = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-generation-prompt")) {
            gen = 0;
        } else if ((!strcmp(a, "--model") || !strcmp(a, "--messages") || !strcmp(a, "--tools")) && i + 1 < argc) {
            const char **slot = a[2] == 'm' && a[3] == 'o' ? &model : a[2] == 'm' ? &messages_path : &tools_path;
            *slot = argv[++i];
        } else {
            fprintf(stderr, "kvctl chat-template: unknown option or missing value '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || !messages_path) {
        fprintf(stderr, "kvctl chat-template: %s is required\n", !model ? "--model DIR" : "--messages FILE");
        usage(stderr);
        return 2;
    }
    json_file mf = {0}, tf = {0};
    kv_chat_template *ct = NULL;
    char *out = NULL;
    size_t len = 0;
    int rc = 1;
    if (read_json_file(messages_path, &mf) || (tools_path && read_json_file(tools_path, &tf)))
        goto done;
    const json_value *root = json_root(mf.doc), *messages = root, *tools = NULL;
    if (root->type == JSON_OBJECT) {
        messages = json_get(root, "messages");
        tools = json_get(root, "tools");
    }
    if (tools_path)
        tools = json_root(tf.doc);
    if (!messages || messages->type != JSON_ARRAY) {
        fprintf(stderr, "kvctl chat-template: %s: expected an array of messages (or {\"messages\": [...]})\n",
                messages_path);
        goto done;
    }
    kv_err err = {0};
    if (kv_chat_template_load(model, NULL, &ct, &err)) {
        fprintf(stderr, "kvctl chat-template: %s\n", err.msg);
        goto done;
    }
    kv_chat_render_opts opts = {.tools = tools, .add_generation_prompt = gen};
    if (kv_chat_template_render(ct, messages, &opts, &out, &len, &err)) {
        fprintf(stderr, "kvctl chat-template: %s\n", err.msg);
        goto done;
    }
    rc = fwrite(out, 1, len, stdout) == len && fflush(stdout) == 0 ? 0 : 1;
done:
    free(out);
    kv_chat_template_free(ct);
    free_json_file(&mf);
    free_json_file(&tf);
    return rc;
}
