"""Attribution methods, one module per method or family; :mod:`~onnxplain.methods.catalog` lists them all.

Graph heads (``head(ctx) -> (attribution tensor, its shape)``) live in ``gradient``, ``modified``,
``lrp``, ``deeplift`` and ``cam``; Python-driven methods in ``cam_forward``, ``occlusion``, ``rise``,
``lime`` and ``perturbation``; ``featurevis`` explains inner units.
"""
