"""Dataset-scale explanation and evaluation on Ray Data (the optional extra: ``pip install "onnxplain[ray]"``).

>>> from onnxplain.dataset import explain_dataset, evaluate_dataset, read_maps
>>> explain_dataset("model.onnx", "val_images/", methods=["gradient", "gradcam"], output="audit/")
>>> maps = read_maps("audit/")  # {(id, method): attribution}

The same call runs on a laptop (a local Ray on all cores) or a cluster (``address="ray://head:10001"`` or
``RAY_ADDRESS``): the shards of the source flow through ``Dataset.map_batches`` into a pool of actors, each
holding one :class:`~onnxplain.runtime.explainer.Explainer` (graphs built once, one onnxruntime session per
method, its intra-op threads by default the node's cores shared among the actors there, CUDA with
``gpus_per_actor``). Outputs are Parquet shards written atomically; a rerun skips the shards already
written; an item that fails is a row of ``errors.csv``.
Modules: :mod:`~onnxplain.dataset.sources` (what is read), :mod:`~onnxplain.dataset.worker` (the actor),
:mod:`~onnxplain.dataset.store` (what is written), :mod:`~onnxplain.dataset.run` (the driver).
"""

from onnxplain.dataset.run import INSTALL, evaluate_dataset, explain_dataset, init, require_ray
from onnxplain.dataset.store import read_errors, read_maps

__all__ = ["INSTALL", "evaluate_dataset", "explain_dataset", "init", "read_errors", "read_maps", "require_ray"]
