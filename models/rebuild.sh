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

# models/sheet.onnx, rods.onnx, ribs.onnx, sheet_fourier.onnx: parts no test was tuned on, for
# benchmarks/bench_misses.py: a tilted sheet 0.6% thick with two slots (also trained with Fourier features),
# a frame of rods 0.4% of the box thick with two small separate balls, and a block with five fins 0.5% thick
# far from the origin; trained from their meshes with all defaults.
python - "$run" <<'PY'
import sys
import numpy as np
import trimesh
from trimesh.creation import box, cylinder, icosphere
from trimesh.transformations import rotation_matrix

def moved(mesh, offset):
    mesh.apply_translation(offset)
    return mesh

t = 0.006
sheet = trimesh.util.concatenate([box((1.0, 0.2, t)), moved(box((1.0, 0.2, t)), (0, 0.4, 0)),
                                  moved(box((0.2, 0.2, t)), (-0.4, 0.2, 0)), moved(box((0.3, 0.2, t)), (0, 0.2, 0)),
                                  moved(box((0.1, 0.2, t)), (0.45, 0.2, 0))])
sheet.apply_transform(rotation_matrix(0.3, (1, 1, 0)))
sheet.export(f"{sys.argv[1]}/sheet.stl")
rods = []
for a in (-0.4, 0.4):
    for b in (-0.4, 0.4):
        for axis in range(3):
            rod = cylinder(radius=0.004, height=0.8, sections=24)
            if axis < 2:
                rod.apply_transform(rotation_matrix(np.pi / 2, (0, 1, 0) if axis == 0 else (1, 0, 0)))
            rods.append(moved(rod, ([a, b, 0.0][:axis] + [0.0] + [a, b, 0.0][axis:])[:3]))
rods += [moved(icosphere(2, 0.01), (0.1, 0.05, 0.02)), moved(icosphere(2, 0.015), (-0.15, 0.2, -0.1))]
frame = trimesh.util.concatenate(rods)
frame.apply_transform(rotation_matrix(0.5, (0.2, 1, 0.3)))
frame.export(f"{sys.argv[1]}/rods.stl")
ribs = trimesh.util.concatenate([box((0.6, 0.4, 0.1))] + [moved(box((0.005, 0.4, 0.3)), (x, 0, 0.2))
                                                          for x in np.linspace(-0.25, 0.25, 5)])
ribs.apply_translation((1000.0, -2000.0, 500.0))
ribs.export(f"{sys.argv[1]}/ribs.stl")
PY
for part in sheet rods ribs; do
  occ-train "$run/$part.stl" --out-dir "$run/$part" --seed 0 --device cpu
  occ-export "$run/$part/best.pt" "$here/$part.onnx"
done
occ-train "$run/sheet.stl" --out-dir "$run/sheet_fourier" --seed 0 --device cpu --encoding fourier
occ-export "$run/sheet_fourier/best.pt" "$here/sheet_fourier.onnx"
