"""occnet's exporter: checkpoint -> verified ONNX model (needs PyTorch and onnx: ``occnet[train]``).

>>> from occnet.export.onnx_export import export_checkpoint
>>> report = export_checkpoint("best.pt", "model.onnx")
"""
