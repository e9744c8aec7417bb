"""ONNX in: load safely, canonicalise, and rewrite into an explanation graph (forward + backward + head)."""
