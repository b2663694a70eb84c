"""VA-VAE (arXiv 2501.01423): the LDM KL autoencoder with the optional VF loss; no augmentation.

The family of every point before `tokenizer.family` existed; its step is exactly the one
`VAVAEObjective` always ran (encode, sample the posterior, decode, score against the image).
"""

from workloads.families.base import TokenizerFamily


class VAVAEFamily(TokenizerFamily):
    name = "vavae"
    source = "hustvl/LightningDiT@2725fed:vavae/ldm/models/autoencoder.py"


FAMILY = VAVAEFamily()
