#!/usr/bin/env bash
# Regenerates generated/ from protos/: Python messages, gRPC stubs and .pyi type stubs,
# with imports rewritten to absolute `generated.` paths so no sys.path tricks are needed.
set -euo pipefail
venv_bin="${1:?usage: gen_protos.sh VENV_BIN [OUT_DIR]}"
out="${2:-generated}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
# The mypy plugins are looked up on PATH by protoc.
export PATH="$(cd "$venv_bin" && pwd):$PATH"
rm -rf "$out/liveresource"
mkdir -p "$out"
"$venv_bin/python" -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/liveresource/v1/*.proto
"$venv_bin/python" scripts/fix_generated_imports.py "$out"
