"""FedFTG's conditional generator ``G(z, y)``.

Zhang, Shen, Ding, Tao, Duan, "Fine-tuning Global Model via Data-Free Knowledge
Distillation for Non-IID Federated Learning", CVPR 2022 (arXiv 2203.09249). The layers
follow the authors' released code (``CGeneratorA`` in ``models/gan_models.py`` of
github.com/ZhangLin-PKU/FedFTG), a DAFL-style generator with a label embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedrdskd.kd.generators import checked_image_shape


class ConditionalGenerator(nn.Module):
    """Map a latent ``z`` and a class label ``y`` to an image of ``image_shape``.

    ``z → linear → channels × H/4 × W/4`` and ``one-hot(y) → linear → channels × H/4 ×
    W/4`` are concatenated along the channels (``2·channels`` maps), then
    ``BN → upsample ×2 → conv3x3 (2·channels) → BN → LeakyReLU(0.2) → upsample ×2 →
    conv3x3 (channels) → BN → LeakyReLU(0.2) → conv3x3 (C) → tanh → BN(affine=False)``.
    The final affine-free BN standardises every output channel over the batch, matching
    normalised model inputs. The BNs use PyTorch's default ``eps`` (the released code
    does; DAFL's ``eps=0.8`` is not used here). 28×28 starts at 7×7, 32×32 at 8×8.

    Parameters
    ----------
    latent_dim : int
        Size of ``z`` (the released code: 100 for CIFAR-10 and MNIST, 256 for CIFAR-100).
    num_classes : int
        Number of classes ``C`` of the one-hot label embedding.
    image_shape : tuple[int, int, int]
        ``(C, H, W)`` of the generated images; ``H`` and ``W`` must be multiples of 4.
    channels : int (default: 64)
        Maps per branch at ``H/4 × W/4`` (the released code's ``ngf = 64``); the first
        convolutions work on ``2·channels`` maps.
    """

    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        image_shape: tuple[int, int, int],
        *,
        channels: int = 64,
    ) -> None:
        super().__init__()
        image_channels, height, width = checked_image_shape(image_shape)
        if latent_dim < 1 or num_classes < 2 or channels < 1:
            raise ValueError(f"latent_dim must be >= 1, num_classes >= 2 and channels >= 1, got "
                             f"latent_dim={latent_dim!r}, num_classes={num_classes!r}, "
                             f"channels={channels!r}.")
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.image_shape = (image_channels, height, width)
        self.channels = int(channels)
        self.initial_size = (height // 4, width // 4)
        initial_units = channels * self.initial_size[0] * self.initial_size[1]
        self.project_latent = nn.Linear(latent_dim, initial_units)
        self.project_label = nn.Linear(num_classes, initial_units)
        self.initial_norm = nn.BatchNorm2d(2 * channels)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=1, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.LeakyReLU(0.2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, stride=1, padding=1),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, image_channels, 3, stride=1, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(image_channels, affine=False),
        )

    def forward(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` for latents ``[B, latent_dim]`` and labels.

        Parameters
        ----------
        latents : torch.Tensor
            ``z``, shape ``[B, latent_dim]``.
        labels : torch.Tensor
            Class indices ``[B]`` (integers, one-hot encoded here) or label vectors
            ``[B, num_classes]`` (e.g. one-hot, used as given).
        """
        if labels.ndim == 1:
            labels = F.one_hot(labels.long(), self.num_classes)
        labels = labels.to(latents.dtype)
        maps = (latents.shape[0], self.channels, *self.initial_size)
        features = torch.cat([self.project_latent(latents).view(maps),
                              self.project_label(labels).view(maps)], dim=1)
        features = self.initial_norm(features)
        features = self.block1(F.interpolate(features, scale_factor=2.0))
        return self.block2(F.interpolate(features, scale_factor=2.0))
