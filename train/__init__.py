"""occnet's training half (needs PyTorch: ``pip install 'occnet[train]'``).

>>> from occnet.train.sampling import SamplingConfig, load_points
>>> from occnet.train.trainer import TrainConfig, train
>>> result = train(load_points(None, SamplingConfig(), seed=0), TrainConfig(epochs=10), "runs/demo")
"""
