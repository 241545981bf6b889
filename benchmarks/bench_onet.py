"""Meshing a conditional model of ONet's size from point clouds, beside the 64-wide demo model, in one run.

The model is ONet's point-cloud architecture (ResNet-PointNet 512, c_dim 512, decoder 256: 10.4 M parameters)
with realistic weights: PyTorch's initialisation, the weights ONet's initialisation zeroes drawn like the
others, batch-norm statistics measured on the activations of clouds on random ellipsoids, and the output layer
fitted by least squares to those ellipsoids' occupancy as logits of a trained model's scale (200 x the signed
distance, clipped to +-12). Its surfaces are single closed blobs of the demo's complexity (44k faces at 128^3,
the demo 50k); a random output layer gave surfaces 6x busier than any shape's. It is exported as occ-export
exports ONet's checkpoints and meshed through the runtime from clouds of 300 points on random ellipsoids. Each
case runs in a process of its own, which reports its peak memory (VmHWM).

    python benchmarks/bench_onet.py                 # 128^3 and 256^3, 20 clouds at 128^3
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOGIT_SLOPE, LOGIT_LIMIT = 200.0, 12.0
"""Logits the output layer is fitted to: this times the ellipsoid's signed distance, clipped to +-the limit."""


def ellipsoids(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` random ellipsoids in ONet's frame as ``(cloud (300, 3), radii (3,), centre (3,))``: the cloud
    on the surface, with noise 0.005 as ONet's inputs have."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        directions = rng.normal(size=(300, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        radii, centre = rng.uniform(0.15, 0.45, 3), rng.uniform(-0.05, 0.05, 3)
        out.append((directions * radii + centre + rng.normal(scale=0.005, size=(300, 3)), radii, centre))
    return out


def clouds(count: int, seed: int = 0) -> list[np.ndarray]:
    return [cloud for cloud, _, _ in ellipsoids(count, seed)]


def build_model(path: Path) -> None:
    """An ONet-size checkpoint with realistic weights, saved as ONet saves, exported to ``path``."""
    import torch
    import torch.nn.functional as F

    from occnet.export.onnx_export import export_checkpoint
    from occnet.train.onet import ConditionalOccNet, OnetArchitecture, measure_statistics

    torch.manual_seed(0)
    model = ConditionalOccNet(OnetArchitecture())
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "gamma" in name or "beta" in name or name.endswith("fc_1.weight"):
                tensor.copy_((torch.rand(tensor.shape) * 2 - 1) / tensor[0].numel() ** 0.5
                             + (1.0 if "gamma.bias" in name else 0.0))
    shapes = ellipsoids(16, seed=1)
    seen = torch.from_numpy(np.stack([cloud for cloud, _, _ in shapes])).float()
    points = torch.rand(16, 4096, 3) * 1.1 - 0.55
    measure_statistics(model, [(points[i:i + 4], seen[i:i + 4]) for i in range(0, 16, 4)])
    decoder = model.decoder
    with torch.no_grad():                                  # the output layer's input: (16 * 4096, 256) features
        net = decoder.fc_p(points.transpose(1, 2))
        code = model.encoder(seen)
        for block in decoder.blocks():
            net = block(net, code)
        features = F.relu(decoder.bn(net, code)).transpose(1, 2).reshape(-1, net.shape[1]).double()
    target = torch.from_numpy(np.concatenate([
        np.clip(-LOGIT_SLOPE * (np.linalg.norm((p - centre) / radii, axis=1) - 1) * radii.min(), -LOGIT_LIMIT,
                LOGIT_LIMIT) for p, (_, radii, centre) in zip(points.numpy(), shapes)]))
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    weights = torch.linalg.solve(design.T @ design + 1e-3 * torch.eye(design.shape[1], dtype=torch.float64),
                                 design.T @ target)
    with torch.no_grad():
        decoder.fc_out.weight.copy_(weights[:-1].float().reshape(1, -1, 1))
        decoder.fc_out.bias.copy_(weights[-1:].float())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "epoch_it": 0, "it": 0, "loss_val_best": np.float64(0.0)}, buffer)
    checkpoint = path.with_suffix(".pt")
    checkpoint.write_bytes(buffer.getvalue())
    export_checkpoint(checkpoint, path, verify_points=2000)


def case(model_path: str, resolution: int, count: int) -> dict:
    """In this process: load the model, mesh ``count`` clouds (or the unconditional model once) at
    ``resolution``; figures of the first and of all."""
    from occnet.runtime import MeshSettings, OccupancyModel, mesh_model

    start = time.perf_counter()
    model = OccupancyModel(model_path, device="cpu")
    loaded = time.perf_counter()
    settings = MeshSettings(resolution=resolution)
    seconds, evaluations, faces = [], [], []
    for cloud in clouds(count) if model.info.condition else [None]:
        began = time.perf_counter()
        shaped = model.given(cloud) if cloud is not None else model
        mesh, stats = mesh_model(shaped, settings)
        seconds.append(time.perf_counter() - began)
        evaluations.append(stats.points_evaluated)
        faces.append(stats.faces)
    return {"load_s": loaded - start, "first_s": seconds[0], "all_s": time.perf_counter() - start,
            "evaluations": evaluations[0], "faces": faces[0], "count": len(seconds),
            "peak_mib": _peak_mib()}


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(model: Path, resolution: int, count: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from bench_onet import case; "
            f"print(json.dumps(case({str(model)!r}, {resolution}, {count})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--clouds", type=int, default=20, help="clouds meshed with one model load at the first "
                        "resolution")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        onet = Path(folder) / "onet.onnx"
        build_model(onet)
        print(f"ONet-size model: {onet.stat().st_size / 2**20:.1f} MiB")
        print("| model | resolution | clouds | evaluations | faces | seconds (first) | seconds (all, load incl.) "
              "| peak MiB |")
        print("|---|---|---|---|---|---|---|---|")
        rows = []
        for resolution in args.resolutions:
            for name, path, count in (("demo 64x4", ROOT / "models" / "demo.onnx", 1), ("ONet 10.4 M", onet, 1)):
                row = run_case(path, resolution, count)
                rows.append((name, resolution, row))
                print(f"| {name} | {resolution} | 1 | {row['evaluations']:,} | {row['faces']:,} | "
                      f"{row['first_s']:.2f} | {row['all_s']:.2f} | {row['peak_mib']:.0f} |")
        many = run_case(onet, args.resolutions[0], args.clouds)
        one = next(row for name, resolution, row in rows if name.startswith("ONet") and
                   resolution == args.resolutions[0])
        print(f"| ONet 10.4 M | {args.resolutions[0]} | {args.clouds} | {many['evaluations']:,} (first) | "
              f"{many['faces']:,} (first) | {many['first_s']:.2f} | {many['all_s']:.2f} | {many['peak_mib']:.0f} |")
        print(f"{args.clouds} clouds with one model load: {many['all_s'] / one['all_s']:.1f}x one cloud's time "
              f"(load included in both)")


if __name__ == "__main__":
    main()
