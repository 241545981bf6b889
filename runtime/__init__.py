"""occnet's torch-free runtime: load an occnet ONNX model, evaluate it on a grid, mesh it, evaluate meshes.

>>> from occnet.runtime import OccupancyModel, MeshSettings, mesh_model
>>> mesh, stats = mesh_model(OccupancyModel("models/demo.onnx"), MeshSettings(resolution=128))

Names are imported on first use (PEP 562), so a command's ``--help`` does not load onnxruntime,
scikit-image and trimesh.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Architecture": "contract", "ModelInfo": "contract",
    "DeviceError": "errors", "EmptySurfaceError": "errors", "InputError": "errors", "ModelError": "errors",
    "OccNetError": "errors", "OutputError": "errors", "ResourceError": "errors",
    "Field": "field", "adaptive_field": "field", "dense_field": "field",
    "Grid": "grid",
    "MeshStats": "mesher", "mesh_field": "mesher", "mesh_model": "mesher",
    "write_mesh": "meshio", "read_mesh": "meshio",
    "OccupancyModel": "session",
    "MeshSettings": "settings", "probability_to_logit": "settings",
    "extract_mesh": "surface",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
