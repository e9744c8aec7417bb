"""Backward rules: true VJPs (``vjp/``), modified rules (guided, LRP, DeepLIFT) and the rule-set loader."""
