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

# models/tube.onnx: a thin-walled tube (wall 0.5% of the longest side, about one voxel at 256^3), the case
# that coarse-to-fine extraction must not drop; trained from its mesh with all defaults.
python - "$run/tube.stl" <<'PY'
import sys, trimesh
trimesh.creation.annulus(r_min=0.295, r_max=0.3, height=1.0, sections=256).export(sys.argv[1])
PY
occ-train "$run/tube.stl" --out-dir "$run/tube" --seed 0 --device cpu
occ-export "$run/tube/best.pt" "$here/tube.onnx"
