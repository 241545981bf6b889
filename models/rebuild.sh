#!/usr/bin/env bash
# Rebuild models/demo.pt and models/demo.onnx: the built-in demo shape, trained with occ-train's defaults
# on the CPU (deterministic for a seed), exported and verified by occ-export. Needs occnet[train].
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
occ-train --out-dir "$run" --seed 0 --device cpu
cp "$run/best.pt" "$here/demo.pt"
occ-export "$here/demo.pt" "$here/demo.onnx"
