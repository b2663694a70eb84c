"""PatchGAN discriminator and hinge loss of the tokenizer's adversarial term (taming-transformers)."""

import torch
import torch.nn.functional as F
from torch import nn


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN: 4x4 convs, BatchNorm, LeakyReLU(0.2); one logit per image patch.

    Layout and init follow taming's ``NLayerDiscriminator(...).apply(weights_init)``; keys are
    ``main.{i}.*`` as in the reference's ``loss.discriminator``.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        width = ndf
        for index in range(1, n_layers + 1):
            next_width = ndf * min(2**index, 8)
            # The last hidden conv keeps the resolution (stride 1); earlier ones halve it.
            stride = 2 if index < n_layers else 1
            layers += [
                # No conv bias: BatchNorm's shift makes it redundant.
                nn.Conv2d(width, next_width, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(next_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_taming_weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def _taming_weights_init(module: nn.Module) -> None:
    # taming `weights_init`: conv weights N(0, 0.02), conv biases keep PyTorch's default init,
    # BatchNorm scale N(1, 0.02) and shift 0.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
