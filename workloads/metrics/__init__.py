"""Evaluation metrics, one small module each.

- ``frechet``: Fréchet distance (FID, sFID, rFID, FD_DINOv2, FD-proxy) from feature statistics.
- ``inception``: torch-fidelity InceptionV3 (pool3, logits, sFID spatial features) from local weights.
- ``inception_score``, ``precision_recall``: IS and k-NN precision/recall.
- ``suite``: the ADM set (FID, sFID, IS, precision, recall) from Inception features.
- ``reference``: ADM-style ``.npz`` statistics and the keyed reference cache.
- ``reconstruction``: tokenizer PSNR, SSIM, LPIPS, rFID.
- ``uniformity``: latent-space density CV, Gini and normalised entropy (paper Tab. 6).
- ``eval_spec``: ``EvalSpec`` stored with every metric, and honest ``FID-10K``-style labels.
- ``proxy``: the embedded dataset's CNN evaluator (``fd_proxy``, ``class_consistency``).
"""
