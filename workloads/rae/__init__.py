"""RAE tokenizer (arXiv 2510.11690): a frozen DINOv2 encoder and a trained ViT decoder.

Inference: ``RAE`` (``encode`` -> ``PointPosterior``, ``decode``). Training: ``RAETrainingModel``
(RAE + discriminator), trained by the shared ``VAVAEObjective`` through the ``rae`` family.
"""

from workloads.rae.decoder import ViTDecoder
from workloads.rae.model import RAE, PointPosterior, RAETrainingModel

__all__ = ["RAE", "PointPosterior", "RAETrainingModel", "ViTDecoder"]
