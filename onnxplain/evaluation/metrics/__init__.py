"""Evaluation metrics for attribution maps (issue 6), one module per family.

- :mod:`.faithfulness`: pixel flipping / region perturbation with AOPC (Samek et al. 2017),
  deletion and insertion (Petsiuk et al. 2018);
- :mod:`.sanity`: model-parameter randomisation, cascading and independent (Adebayo et al. 2018);
- :mod:`.robustness`: class sensitivity ("mode collapse") and max-sensitivity (Yeh et al. 2019);
- :mod:`.localisation`: pointing game (Zhang et al. 2016), relevance mass and rank accuracy
  (Arras et al. 2022);
- :mod:`.similarity`: Spearman rank correlation and SSIM between two maps.

Heatmaps are float arrays ``[N, H, W]`` (higher = more relevant), masks bool ``[N, H, W]``.
"""
