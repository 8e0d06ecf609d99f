"""Generator networks for data-free distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def generate_unchanged(generator: nn.Module, *inputs: torch.Tensor,
                       batch_statistics: bool) -> torch.Tensor:
    """``generator(*inputs)`` without gradients, leaving the generator exactly as it was.

    Sampling must not change the generator: its BatchNorm running statistics are
    restored afterwards, and so is its train/eval mode.

    Parameters
    ----------
    generator : torch.nn.Module
        Any generator (``G(z)`` or ``G(z, y)``).
    *inputs : torch.Tensor
        Its inputs.
    batch_statistics : bool
        Normalise BatchNorm layers with the batch's statistics (train mode) instead of
        their running statistics (eval mode).
    """
    was_training = generator.training
    generator.train(batch_statistics)
    buffers = [(buffer, buffer.clone()) for buffer in generator.buffers()]
    images = generator(*inputs)
    for buffer, saved in buffers:
        buffer.copy_(saved)
    generator.train(was_training)
    return images


def checked_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(C, H, W)`` as ints, for generators that upsample twice by 2 (H, W multiples of 4).

    Raises
    ------
    ValueError
        If the shape is not 3-D or H, W are not positive multiples of 4.
    """
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}.")
    image_channels, height, width = (int(v) for v in image_shape)
    if height % 4 or width % 4 or min(height, width, image_channels) < 1:
        raise ValueError(f"image_shape must have H and W multiples of 4 (e.g. 28 or 32), "
                         f"got {tuple(image_shape)!r}.")
    return image_channels, height, width


class DAFLGenerator(nn.Module):
    """The DAFL-style generator that RDSKD uses (Chen et al., ICCV 2019; RDSKD's code).

    ``z → linear → channels × H/4 × W/4 → BN → upsample ×2 → conv3x3 (channels) → BN →
    LeakyReLU(0.2) → upsample ×2 → conv3x3 (channels/2) → BN → LeakyReLU(0.2) →
    conv3x3 (C) → tanh → BN(affine=False)``. The final affine-free BN standardises each
    output channel, matching normalised model inputs. The output has exactly
    ``image_shape`` (28×28 starts at 7×7, 32×32 at 8×8).

    Parameters
    ----------
    latent_dim : int
        Size of the latent vector ``z``.
    image_shape : tuple[int, int, int]
        ``(C, H, W)`` of the generated images; ``H`` and ``W`` must be multiples of 4.
    channels : int (default: 128)
        Width of the network (the released code: 128). At LeNet scale it sets most of the
        server's cost: the convolutions run at full resolution.
    batchnorm_eps : float (default: 0.8)
        ``eps`` of the two BNs inside the upsampling blocks. DAFL's and RDSKD's code pass
        0.8 positionally to ``BatchNorm2d`` (which is ``eps``, though probably meant as
        momentum); we keep their behaviour.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        *,
        channels: int = 128,
        batchnorm_eps: float = 0.8,
    ) -> None:
        super().__init__()
        image_channels, height, width = checked_image_shape(image_shape)
        if latent_dim < 1 or channels < 2:
            raise ValueError(f"latent_dim must be >= 1 and channels >= 2, "
                             f"got latent_dim={latent_dim!r}, channels={channels!r}.")
        self.latent_dim = int(latent_dim)
        self.image_shape = (image_channels, height, width)
        self.channels = int(channels)
        self.initial_size = (height // 4, width // 4)
        self.project = nn.Linear(latent_dim, channels * self.initial_size[0] * self.initial_size[1])
        self.initial_norm = nn.BatchNorm2d(channels)
        self.block1 = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=1, padding=1),
            nn.BatchNorm2d(channels, eps=batchnorm_eps),
            nn.LeakyReLU(0.2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, stride=1, padding=1),
            nn.BatchNorm2d(channels // 2, eps=batchnorm_eps),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels // 2, image_channels, 3, stride=1, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(image_channels, affine=False),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Map latents ``[B, latent_dim]`` to images ``[B, C, H, W]``."""
        features = self.project(latents)
        features = features.view(latents.shape[0], self.channels, *self.initial_size)
        features = self.initial_norm(features)
        features = self.block1(F.interpolate(features, scale_factor=2.0))
        return self.block2(F.interpolate(features, scale_factor=2.0))
