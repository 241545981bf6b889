"""occnet's torch-free runtime: load an occnet ONNX model, evaluate it on a grid, mesh it, evaluate meshes.

>>> from occnet.runtime import OccupancyModel, MeshSettings, mesh_model
>>> mesh, stats = mesh_model(OccupancyModel("models/demo.onnx"), MeshSettings(resolution=128))
"""

from occnet.runtime.contract import Architecture, ModelInfo
from occnet.runtime.errors import (
    DeviceError,
    EmptySurfaceError,
    InputError,
    ModelError,
    OccNetError,
    ResourceError,
)
from occnet.runtime.extract import Field, adaptive_field, dense_field
from occnet.runtime.grid import Grid
from occnet.runtime.mesher import MeshSettings, MeshStats, mesh_field, mesh_model
from occnet.runtime.meshio import write_mesh
from occnet.runtime.session import OccupancyModel
from occnet.runtime.surface import extract_mesh, probability_to_logit

__all__ = [
    "Architecture", "DeviceError", "EmptySurfaceError", "Field", "Grid", "InputError", "MeshSettings",
    "MeshStats", "ModelError", "ModelInfo", "OccNetError", "OccupancyModel", "ResourceError",
    "adaptive_field", "dense_field", "extract_mesh", "mesh_field", "mesh_model", "probability_to_logit",
    "write_mesh",
]
