"""Training, evaluation, checkpoints and torchrun helpers.

``train.py`` is the training loop, ``evaluate.py`` the metrics pass and the ``evaluate`` API,
``checkpoint.py`` the training state beside the weights (rotation, resume; the weights format
itself is :mod:`pixelwise.checkpoint`), ``data_setup.py`` datasets and loaders from a
config, ``optim.py`` optimisers and schedules, ``distributed.py`` the torchrun
helpers (the device choice is :mod:`pixelwise.device`).
"""
