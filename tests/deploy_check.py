#!/usr/bin/env python3
"""Static checks of deploy/k8s and the Dockerfile (run by tests/test_deploy.sh).

usage: deploy_check.py k8s SOURCE_DIR [BIN_DIR]
       deploy_check.py docker SOURCE_DIR INSTALL_PREFIX

k8s: every manifest parses; every name a manifest refers to exists (ConfigMap, Secret,
Service, volume, container port, environment variable); probes reach ports the containers
open, Services the manifests define, binaries the image has; every Deployment has liveness
and readiness probes that test the process (no TCP probes); workers request a GPU and bind a
fixed KV port; NetworkPolicies select real pods and name real ports, and every container port
is admitted by some policy. CURVE: every key a container or its probes use (--key,
--router-key, --worker-keys, --client-keys, KVSERVE_CLIENT_KEY) is a file (or, for an
allowlist, a directory) that an init container copies from a Secret's items, and every item
names a key of that Secret. With BIN_DIR: every --flag a container, an init-free probe or a
kvctl probe passes is in that binary's --help (of this build).

docker: every COPY source exists and is not excluded by .dockerignore; the targets the build
stage builds are exactly install(TARGETS ...) of CMakeLists.txt; what the run stage copies out
of the build stage exists in a `cmake --install` of this build (INSTALL_PREFIX); the run
stage's packages own every shared library the installed binaries need (dpkg -S), and hold
the CUDA libraries the CUDA backend links; the image, uid and ports match the manifests.
Prints one line per problem; exits 1 if there was any."""
import fnmatch
import os
import re
import shlex
import subprocess
import sys

import yaml

problems = []


def problem(msg):
    problems.append(msg)
    print("deploy_check: " + msg)


# ---- Kubernetes -----------------------------------------------------------------------------

EXTERNAL_PVCS = {"kvserve-models"}           # provided by the operator (deploy/README.md)
EXTERNAL_CLIENT_LABELS = {"kvserve.io/client"}  # pods the operator labels as clients
IMAGE_BINARIES = None                       # filled from CMakeLists.txt's install(TARGETS)
BIN_DIR = None                              # k8s BIN_DIR: flags are checked against --help
KEY_FLAGS = ("--key", "--router-key", "--worker-keys", "--client-keys")
_help_cache = {}


def help_text(binary, sub=None):
    """BIN_DIR/binary [sub] --help (stdout + stderr), cached; None when it cannot run."""
    k = (binary, sub)
    if k not in _help_cache:
        cmd = [os.path.join(BIN_DIR, binary)] + ([sub] if sub else []) + ["--help"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            _help_cache[k] = r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired):
            _help_cache[k] = None
    return _help_cache[k]


def check_flags(where, binary, words):
    """Every --flag in words (a command line after the binary) is in its --help."""
    if BIN_DIR is None:
        return
    sub = words[0] if binary == "kvctl" and words and not words[0].startswith("-") else None
    text = help_text(binary, sub)
    if text is None:
        problem(f"{where}: cannot run {binary} --help from {BIN_DIR}")
        return
    for w in words:
        m = re.match(r"^(--[a-z][a-z0-9-]*)", w)
        if m and not re.search(r"(^|[^a-z0-9-])" + re.escape(m.group(1)) + r"([^a-z0-9-]|$)", text):
            problem(f"{where}: {m.group(1)} is not a flag of {binary}{' ' + sub if sub else ''} (its --help)")


def probe_commands(cmd):
    """(binary, words after it) of each /usr/local/bin/X an exec probe runs."""
    words = shlex.split(cmd[2]) if cmd[0] == "/bin/sh" and len(cmd) == 3 else list(cmd)
    out = []
    for i, w in enumerate(words):
        if w.startswith("/usr/local/bin/"):
            rest = []
            for x in words[i + 1:]:
                if x in (";", "&&", "||", "|"):
                    break
                rest.append(x)
            out.append((w[len("/usr/local/bin/"):], rest))
    return out


def check_keys(where, c, spec, env, secrets):
    """Key files a container names: copied by an init container from a Secret's items."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    provided = {}  # path under the keys volume -> (Secret, key)
    for ic in spec.get("initContainers") or []:
        mounts = {m["name"]: m["mountPath"] for m in ic.get("volumeMounts") or []}
        for vname in mounts:
            sec = (volumes.get(vname) or {}).get("secret")
            if not sec:
                continue
            items = sec.get("items")
            data = (secrets.get(sec["secretName"]) or {}).get("stringData") or {}
            if items is None:
                items = [{"key": k, "path": k} for k in data]
            for it in items:
                if it["key"] not in data:
                    problem(f"{where}: Secret {sec['secretName']} has no key {it['key']} (volume {vname})")
                provided[it["path"]] = (sec["secretName"], it["key"])
    paths = []
    for a in (c.get("command") or []) + (c.get("args") or []):
        m = re.match(r"^(--[a-z-]+)=(.*)$", a)
        if m and m.group(1) in KEY_FLAGS:
            paths.append((m.group(1), expand(m.group(2), env)))
    if "KVSERVE_CLIENT_KEY" in env:
        paths.append(("KVSERVE_CLIENT_KEY", env["KVSERVE_CLIENT_KEY"]))
    for flag, path in paths:
        mount = [m for m in c.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not mount:
            problem(f"{where}: {flag} {path} is on no volume of the container")
            continue
        rel = path[len(mount[0]["mountPath"].rstrip("/")) + 1:]
        if rel not in provided and not any(p.startswith(rel + "/") for p in provided):
            problem(f"{where}: {flag} {path}: no init container copies it from a Secret ({sorted(provided)})")


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") or \
                not (d.get("metadata") or {}).get("name"):
            problem(f"{path}: a document without apiVersion, kind or metadata.name")
    return docs


def labels_match(selector, labels):
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def container_ports(c):
    return {p.get("name"): p["containerPort"] for p in c.get("ports") or []}


def resolve_port(port, ports):
    """A probe's or policy's port (a name or a number) against {name: number}."""
    if isinstance(port, int):
        return port if port in ports.values() else None
    return ports.get(port)


def expand(text, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: str(env.get(m.group(1), m.group(0))), text)


def check_endpoint(where, ep, own_ports, services):
    """tcp://HOST:PORT in an argument or probe: 127.0.0.1 / 0.0.0.0 must be one of the
    container's ports; a name must be a Service with that port."""
    m = re.match(r"^tcp://([^:/]+):(\d+)$", ep)
    if not m:
        problem(f"{where}: endpoint {ep!r} is not tcp://HOST:PORT")
        return
    host, port = m.group(1), int(m.group(2))
    if host in ("127.0.0.1", "0.0.0.0", "*"):
        if port not in own_ports.values():
            problem(f"{where}: {ep} is not a port of the container ({sorted(own_ports.values())})")
    elif host not in services:
        problem(f"{where}: {ep}: no Service named {host}")
    elif port not in [p["port"] for p in services[host]["spec"]["ports"]]:
        problem(f"{where}: {ep}: Service {host} has no port {port}")


def check_probe(where, probe, c, env, services, alive_files):
    if not probe:
        problem(f"{where}: missing")
        return
    ports = container_ports(c)
    if "tcpSocket" in probe:
        problem(f"{where}: a TCP probe passes while the process is stopped (the kernel accepts)")
    if "httpGet" in probe:
        if resolve_port(probe["httpGet"]["port"], ports) is None:
            problem(f"{where}: httpGet port {probe['httpGet']['port']!r} is not a container port")
    if "exec" in probe:
        cmd = probe["exec"]["command"]
        if cmd[0] == "/bin/sh" and (len(cmd) != 3 or cmd[1] != "-c"):
            problem(f"{where}: a shell probe is /bin/sh -c SCRIPT")
        script = " ".join(cmd)
        for b in re.findall(r"/usr/local/bin/([\w-]+)", script):
            if b not in IMAGE_BINARIES:
                problem(f"{where}: /usr/local/bin/{b} is not installed in the image ({sorted(IMAGE_BINARIES)})")
        for var in re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", script):
            if var not in env:
                problem(f"{where}: ${var} is not in the container's environment")
        for ep in re.findall(r"tcp://[^\s\"']+", script):
            check_endpoint(where, ep, ports, services)
        for var in re.findall(r"--router \"?\$\{?([A-Z_][A-Z0-9_]*)", script):
            if var in env and isinstance(env[var], str):
                check_endpoint(where + f" (${var})", env[var], ports, services)
        for f in re.findall(r"stat -c %Y (\S+?)\)", script):
            if f not in alive_files:
                problem(f"{where}: checks the age of {f}, which the container's --alive-file does not name")


def check_deployment(d, cms, secrets, services):
    name = d["metadata"]["name"]
    spec = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    if not labels_match(d["spec"]["selector"], labels):
        problem(f"Deployment {name}: its selector does not match its pod labels")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in cms:
            problem(f"Deployment {name}: volume {v['name']}: no ConfigMap {v['configMap']['name']}")
        if "secret" in v and v["secret"]["secretName"] not in secrets and not v["secret"].get("optional"):
            problem(f"Deployment {name}: volume {v['name']}: no Secret {v['secret']['secretName']}")
        if "secret" in v and v["secret"].get("defaultMode", 0o644) & 0o007:
            problem(f"Deployment {name}: Secret volume {v['name']} is readable by others")
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in EXTERNAL_PVCS:
            problem(f"Deployment {name}: unknown PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']}")
    all_containers = (spec.get("initContainers") or []) + spec["containers"]
    for c in all_containers:
        where = f"Deployment {name} container {c['name']}"
        if c.get("image") != "kvserve:latest":
            problem(f"{where}: image {c.get('image')!r}, not the Dockerfile's kvserve:latest")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                problem(f"{where}: mounts volume {m['name']}, which the pod does not have")
        env = {}
        for src in c.get("envFrom") or []:
            ref = (src.get("configMapRef") or {}).get("name")
            if ref is not None:
                if ref not in cms:
                    problem(f"{where}: envFrom ConfigMap {ref} does not exist")
                else:
                    env.update(cms[ref].get("data") or {})
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                if ref["name"] not in secrets and not ref.get("optional"):
                    problem(f"{where}: env {e['name']}: no Secret {ref['name']}")
            if "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                if ref["key"] not in (cms.get(ref["name"]) or {}).get("data", {}):
                    problem(f"{where}: env {e['name']}: no key {ref['key']} in ConfigMap {ref['name']}")
            env[e["name"]] = e.get("value", "<from " + ",".join(vf) + ">")
        args = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        for a in args:
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                problem(f"{where}: $({var}) in {a!r} is not in the container's environment")
        if c.get("command") and c["command"][0].startswith("/usr/local/bin/"):
            b = c["command"][0][len("/usr/local/bin/"):]
            if b not in IMAGE_BINARIES:
                problem(f"{where}: {b} is not installed in the image")
        ports = container_ports(c)
        for a in args:
            m = re.match(r"^--(router|kv-listen|listen|control)=(.*)$", a)
            if m:
                check_endpoint(f"{where} {a}", m.group(2), ports, services)
        alive = [a.split("=", 1)[1] for a in args if a.startswith("--alive-file=")]
        for f in alive:
            if not any(f.startswith(m["mountPath"].rstrip("/") + "/") and not m.get("readOnly")
                       for m in c.get("volumeMounts") or []):
                problem(f"{where}: --alive-file {f} is not on a writable volume")
        if c in spec["containers"]:
            check_keys(where, c, spec, env, secrets)
            if c.get("command") and c["command"][0].startswith("/usr/local/bin/"):
                check_flags(where, c["command"][0][len("/usr/local/bin/"):], args[1:])
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                for b, words in probe_commands(((c.get(kind) or {}).get("exec") or {}).get("command") or ["-"]):
                    check_flags(f"{where} {kind}", b, words)
            for kind in ("livenessProbe", "readinessProbe"):
                check_probe(f"{where} {kind}", c.get(kind), c, env, services, alive)
            if c.get("startupProbe"):
                check_probe(f"{where} startupProbe", c["startupProbe"], c, env, services, alive)
            component = labels.get("app.kubernetes.io/component")
            if component in ("prefill", "decode"):
                limits = (c.get("resources") or {}).get("limits") or {}
                if str(limits.get("nvidia.com/gpu")) != "1":
                    problem(f"{where}: a worker without the nvidia.com/gpu: 1 limit")
                if not alive:
                    problem(f"{where}: a worker without --alive-file (its liveness probe)")
            if component == "decode":
                listen = [a for a in args if a.startswith("--kv-listen=")]
                if not listen or listen[0].endswith(":0"):
                    problem(f"{where}: the KV endpoint must bind a fixed port (--kv-listen)")
                elif "kv" not in ports or not listen[0].endswith(":" + str(ports["kv"])):
                    problem(f"{where}: {listen[0]} is not the containerPort named kv")
    return labels, spec["containers"]


def check_k8s(src):
    global IMAGE_BINARIES
    IMAGE_BINARIES = set(install_targets(src)[0])
    k8s = os.path.join(src, "deploy", "k8s")
    kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
    files = sorted(f for f in os.listdir(k8s) if f.endswith((".yaml", ".yml")))
    docs, listed = [], set(kust.get("resources") or [])
    for r in listed:
        if not os.path.exists(os.path.join(k8s, r)):
            problem(f"kustomization.yaml: resource {r} does not exist")
    for f in files:
        if f == "kustomization.yaml":
            continue
        for d in load_docs(os.path.join(k8s, f)):
            d["_file"], d["_applied"] = f, f in listed
            docs.append(d)
    for f in files:
        if f not in listed and f != "kustomization.yaml" and not re.search(r"(\.example|-nccl)\.ya?ml$", f):
            problem(f"{f}: neither in kustomization.yaml nor an optional/example file")
    applied = [d for d in docs if d["_applied"]]
    by = lambda kind, ds: {d["metadata"]["name"]: d for d in ds if d["kind"] == kind}
    cms, services = by("ConfigMap", applied), by("Service", applied)
    secrets = by("Secret", docs)  # the example Secrets define the names (kubectl create secret)
    pods = []
    for d in applied:
        if d["kind"] == "Deployment":
            pods.append((d["metadata"]["name"],) + check_deployment(d, cms, secrets, services))
    if not pods:
        problem("no Deployment in kustomization.yaml's resources")
    for s in services.values():
        sel = {"matchLabels": s["spec"]["selector"]}
        targets = [cs for (_, labels, cs) in pods if labels_match(sel, labels)]
        if not targets:
            problem(f"Service {s['metadata']['name']}: its selector matches no Deployment")
        for p in s["spec"]["ports"]:
            for cs in targets:
                if not any(resolve_port(p.get("targetPort", p["port"]), container_ports(c)) for c in cs):
                    problem(f"Service {s['metadata']['name']}: targetPort {p.get('targetPort')!r} is no container port")
    admitted = set()  # (deployment, port number)
    for np in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        name = np["metadata"]["name"]
        targets = [(n, cs) for (n, labels, cs) in pods if labels_match(np["spec"]["podSelector"], labels)]
        if not targets:
            problem(f"NetworkPolicy {name}: its podSelector matches no Deployment")
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                ps = peer.get("podSelector")
                if ps is None:
                    problem(f"NetworkPolicy {name}: a peer that is not a podSelector (admits more than the cluster)")
                    continue
                keys = set((ps.get("matchLabels") or {})) | {e["key"] for e in ps.get("matchExpressions") or []}
                if not keys & EXTERNAL_CLIENT_LABELS and not any(labels_match(ps, l) for (_, l, _) in pods):
                    problem(f"NetworkPolicy {name}: a podSelector that matches no Deployment: {ps}")
            for p in rule.get("ports") or []:
                for (n, cs) in targets:
                    if p.get("endPort"):
                        continue
                    num = [resolve_port(p["port"], container_ports(c)) for c in cs]
                    num = [x for x in num if x]
                    if not num:
                        problem(f"NetworkPolicy {name}: port {p['port']!r} is not a port of {n}")
                    elif np["_applied"]:
                        admitted.update((n, x) for x in num)
    for (n, _, cs) in pods:
        for c in cs:
            for port in container_ports(c).values():
                if (n, port) not in admitted:
                    problem(f"Deployment {n}: container port {port} is admitted by no NetworkPolicy")
    print(f"deploy_check: k8s: {len(docs)} objects in {len(files)} files, {len(pods)} Deployments")


# ---- Dockerfile -----------------------------------------------------------------------------

def install_targets(src):
    text = open(os.path.join(src, "CMakeLists.txt")).read()
    m = re.search(r"install\(TARGETS\s+([^)]*?)\s+RUNTIME DESTINATION", text)
    libs = re.search(r"install\(TARGETS\s+([^)]*?)\s+LIBRARY DESTINATION", text)
    if not m:
        problem("CMakeLists.txt: no install(TARGETS ... RUNTIME DESTINATION ...)")
        return [], []
    return m.group(1).split(), libs.group(1).split() if libs else []


def dockerignored(path, patterns):
    """Whether .dockerignore drops path: a pattern matching it or one of its parents (the
    last matching pattern wins; ! re-includes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").lstrip("/")
        if any(fnmatch.fnmatch(q, p) or fnmatch.fnmatch(q, p.replace("**/", "")) for q in prefixes):
            out = not neg
    return out


def dockerfile_instructions(text):
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def needed_libs(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def owner_package(lib):
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"):
        p = os.path.join(d, lib)
        if os.path.exists(p):
            for q in (p, os.path.realpath(p), "/usr" + p if not p.startswith("/usr") else p[4:]):
                r = subprocess.run(["dpkg", "-S", q], capture_output=True, text=True)
                if r.returncode == 0:
                    return r.stdout.split(":")[0].strip()
    return None


def check_docker(src, prefix):
    text = open(os.path.join(src, "Dockerfile")).read()
    ignore = [l.strip() for l in open(os.path.join(src, ".dockerignore")) if l.strip() and not l.startswith("#")]
    ins = dockerfile_instructions(text)
    args = {}
    stages = []
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args.setdefault(k, v)
        if word == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
            stages.append(base)
            if not re.match(r"^debian:12(-slim)?$", base):
                problem(f"Dockerfile: stage FROM {base}: not Debian 12")
    if len(stages) < 2:
        problem("Dockerfile: not multi-stage")
    runtime, lib_targets = install_targets(src)
    built = []
    for word, rest in ins:
        if word == "COPY" and "--from=" not in rest:
            for s in shlex.split(rest)[:-1]:
                if s.startswith("--"):
                    continue
                s = s.rstrip("/")
                if s == ".":
                    continue
                if not os.path.exists(os.path.join(src, s)):
                    problem(f"Dockerfile: COPY {s}: not in the repository")
                elif dockerignored(s, ignore):
                    problem(f"Dockerfile: COPY {s}: excluded by .dockerignore")
        if word == "COPY" and "--from=build" in rest:
            s = shlex.split(rest)[1]
            if not s.startswith("/opt/kvserve/"):
                problem(f"Dockerfile: COPY --from=build {s}: not under the install prefix /opt/kvserve")
            elif not os.path.exists(os.path.join(prefix, s[len("/opt/kvserve/"):])):
                problem(f"Dockerfile: COPY --from=build {s}: cmake --install does not produce it")
        if word == "RUN":
            m = re.search(r"ninja -C \S+ ([^;]+);", rest)
            if m:
                built = m.group(1).split()
            r = subprocess.run(["bash", "-n"], input=rest.replace("set -eux;", ""), capture_output=True, text=True)
            if r.returncode:
                problem(f"Dockerfile: a RUN script does not parse: {r.stderr.strip()}")
    if sorted(built) != sorted(runtime + lib_targets):
        problem(f"Dockerfile: builds {sorted(built)}, install(TARGETS) names {sorted(runtime + lib_targets)}")
    for b in runtime:
        if not os.path.exists(os.path.join(prefix, "bin", b)):
            problem(f"cmake --install put no bin/{b}")
    # The run stage's packages: what its RUNs apt-get install.
    pkgs, stage = set(), 0
    for word, rest in ins:
        stage += word == "FROM"
        if word != "RUN" or stage != len(stages):
            continue
        for m in re.finditer(r"apt-get install ([^;]+);", rest):
            pkgs |= {re.sub(r"\$\{(\w+)\}", lambda x: args.get(x.group(1), ""), p.strip('"'))
                     for p in m.group(1).split() if not p.startswith("-")}
    have_dpkg = subprocess.run(["sh", "-c", "command -v dpkg && command -v readelf"], capture_output=True).returncode == 0
    if have_dpkg:
        base = {"libc6", "libgcc-s1", "libstdc++6"}
        bins = [os.path.join(prefix, "bin", b) for b in runtime]
        bins += [os.path.join(prefix, "lib", f) for f in os.listdir(os.path.join(prefix, "lib")) if ".so" in f]
        for b in bins:
            for lib in needed_libs(b):
                if re.match(r"lib(a|l|t|ub)san\.", lib):
                    continue  # a sanitizer build's runtime: the image is a Release build
                m = re.match(r"lib(cudart|cublasLt|cublas)\.so\.(\d+)", lib)
                if m:  # the CUDA toolkit's (NVIDIA's packages, not Debian's): same major version
                    want = {"cudart": "cuda-cudart-", "cublas": "libcublas-", "cublasLt": "libcublas-"}[m.group(1)]
                    if not any(p.startswith(want + m.group(2) + "-") for p in pkgs):
                        problem(f"{os.path.basename(b)} needs {lib}: the run stage installs no {want}{m.group(2)}-*")
                    continue
                pkg = owner_package(lib)
                if pkg is None:
                    problem(f"{os.path.basename(b)} needs {lib}, which no Debian package here owns")
                elif pkg not in base and pkg not in pkgs:
                    problem(f"{os.path.basename(b)} needs {lib} ({pkg}), not installed by the run stage")
    else:
        print("deploy_check: dpkg or readelf missing: the run stage's libraries are not checked")
    # The CUDA backend's libraries (not in this build unless it is a CUDA one).
    cuda_cmake = open(os.path.join(src, "kernels", "cuda", "CMakeLists.txt")).read()
    cuda_pkg = {"cudart": "cuda-cudart-", "cublas": "libcublas-", "cublasLt": "libcublas-"}
    for t in re.findall(r"CUDA::(\w+)", cuda_cmake):
        want = cuda_pkg.get(t)
        if want is None:
            problem(f"kernels/cuda links CUDA::{t}: which package? (teach deploy_check.py and the Dockerfile)")
        elif not any(p.startswith(want) for p in pkgs):
            problem(f"kernels/cuda links CUDA::{t}: the run stage installs no {want}*")
    nccl = subprocess.run(["grep", "-rl", "libnccl.so.2", os.path.join(src, "common"), os.path.join(src, "kernels")],
                          capture_output=True, text=True).stdout
    if nccl and "libnccl2" not in pkgs:
        problem("the workers load libnccl.so.2 at run time: the run stage installs no libnccl2")
    # The manifests' side: image name, uid, ports.
    if "-t kvserve:latest" not in text:
        problem("Dockerfile: does not say it builds kvserve:latest (the manifests' image)")
    user = [rest for word, rest in ins if word == "USER"]
    if not user or user[-1].split(":")[0] != "10001":
        problem(f"Dockerfile: USER {user[-1] if user else None}, the manifests run as 10001")
    exposed = {int(p) for word, rest in ins if word == "EXPOSE" for p in rest.split()}
    k8s = os.path.join(src, "deploy", "k8s")
    for f in os.listdir(k8s):
        if f.endswith(".yaml") and f != "kustomization.yaml":
            for d in yaml.safe_load_all(open(os.path.join(k8s, f))):
                if d and d.get("kind") == "Deployment":
                    for c in d["spec"]["template"]["spec"]["containers"]:
                        for p in container_ports(c).values():
                            if p not in exposed:
                                problem(f"Dockerfile: EXPOSE lacks {p} ({f})")
    print(f"deploy_check: docker: stages {stages}, {len(built)} targets, run-stage packages {sorted(pkgs)}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "k8s":
        global BIN_DIR
        BIN_DIR = sys.argv[3] if len(sys.argv) >= 4 else None
        check_k8s(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "docker":
        check_docker(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
