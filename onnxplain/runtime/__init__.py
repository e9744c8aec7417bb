"""Running explanations: onnxruntime sessions, the batched forward driver and the :class:`Explainer` API."""
