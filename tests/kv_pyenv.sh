# Sourced by the shell tests that drive kv-frontend with real Python clients: makes sure
# $BUILD/pyenv has the official openai package and prometheus_client (pip, cached between
# runs), or exits 77 (skipped) saying why. Needs BUILD set; sets VENV.
VENV=$BUILD/pyenv
if ! "$VENV/bin/python" -c "import openai, prometheus_client" 2>/dev/null; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >&2; then
        echo "SKIP: python3 -m venv failed (install python3-venv: scripts/install-deps.sh)" >&2
        exit 77
    fi
    if ! timeout 300 "$VENV/bin/pip" install -q openai prometheus_client >&2; then
        echo "SKIP: pip could not install openai and prometheus_client (no PyPI?)" >&2
        rm -rf "$VENV"
        exit 77
    fi
fi
