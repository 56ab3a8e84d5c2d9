"""kv-frontend chat on a real chat model (SmolLM2), driven by the official openai client:
greedy chat text equals `kvctl generate --chat` through the same router; streamed equals
non-streamed; usage counts the template-rendered prompt (the reference's ids); chat logprobs
equal the engine's (`kvctl generate --local --chat --json --logprobs`) within 1e-4.
Env: FE_URL, ROUTER_EP, KVCTL, MODEL_DIR, REFERENCE (tests/data/smollm2/greedy.json)."""
import json
import os
import subprocess
import sys

import openai

URL, EP, KVCTL, MODEL_DIR = (os.environ[k] for k in ("FE_URL", "ROUTER_EP", "KVCTL", "MODEL_DIR"))
MODEL = os.path.basename(MODEL_DIR.rstrip("/"))
client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=300)
failures = checks = 0


def check(ok, what):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print("FAIL: " + what, file=sys.stderr)


def kvctl_json(*args):
    r = subprocess.run([KVCTL, "generate", "--json", *args], capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, "kvctl generate %s: %s" % (" ".join(args), r.stderr[-500:]))
    return json.loads(r.stdout) if r.returncode == 0 else None


ref = json.load(open(os.environ["REFERENCE"]))
for case in [c for c in ref["cases"] if c["chat"]]:
    msgs = [{"role": "user", "content": case["prompt"]}]
    n = 24
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=n, temperature=0)
    text = r.choices[0].message.content
    check(r.usage.prompt_tokens == len(case["prompt_ids"]),
          "%s: usage.prompt_tokens %d, the reference renders %d" % (case["name"], r.usage.prompt_tokens,
                                                                  len(case["prompt_ids"])))
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=n, temperature=0, stream=True))
    check(chunks[0].choices[0].delta.role == "assistant", "%s: first chunk %s" % (case["name"], chunks[0]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == text, "%s: streamed %r != %r" % (case["name"], streamed, text))
    via_router = kvctl_json("--router", EP, "--chat", "--max-tokens", str(n), "--", case["prompt"])
    if via_router:
        check(via_router["text"] == text, "%s: HTTP %r != kvctl generate --chat %r" % (case["name"], text,
                                                                                       via_router["text"]))
        check(via_router["prompt_token_ids"] == case["prompt_ids"], "%s: prompt ids differ" % case["name"])

    # logprobs: the engine's log-softmax, in process
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=5)
    local = kvctl_json("--local", "--model", MODEL_DIR, "--threads", "1", "--chat", "--max-tokens", "8",
                       "--logprobs", "5", "--", case["prompt"])
    content = r.choices[0].logprobs.content if r.choices[0].logprobs else []
    if local:
        check(len(content) == len(local["token_logprobs"]), "%s: %d logprobs, local %d" %
              (case["name"], len(content), len(local["token_logprobs"])))
        for i, (got, want) in enumerate(zip(content, local["token_logprobs"])):
            err = abs(got.logprob - want) / max(abs(want), 1e-3)
            check(err < 1e-4, "%s: token %d logprob %g, engine %g" % (case["name"], i, got.logprob, want))
            wtop = [t["logprob"] for t in local["top_logprobs"][i]]
            gtop = [t.logprob for t in got.top_logprobs]
            check(len(gtop) == 5 and all(abs(a - b) / max(abs(b), 1e-3) < 1e-4 for a, b in zip(gtop, wtop)),
                  "%s: token %d top logprobs %s, engine %s" % (case["name"], i, gtop, wtop))

print("%d passed, %d failed" % (checks - failures, failures), file=sys.stderr)
sys.exit(1 if failures else 0)
