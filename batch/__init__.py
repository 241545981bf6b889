"""occnet over a collection of shapes, as Ray tasks (``pip install 'occnet[batch]'``): each shape trained,
exported, meshed and scored by the same API as the single-shape commands.

>>> from occnet.batch.sources import find_shapes
>>> from occnet.batch.job import BatchSettings
>>> from occnet.batch.runner import run_batch
>>> report = run_batch(find_shapes(["data/ShapeNet/03001627"]), BatchSettings(), "runs")
"""
