"""Models by name: LeNet-5 (+ half width), a small CNN, and ResNet-18 with a CIFAR stem.

Every model takes normalised float images ``[B, C, H, W]`` of the ``image_shape`` it was
built for and returns logits ``[B, num_classes]``. LeNet-5 and the CNN have no
BatchNorm (its running statistics do not average well across non-IID clients);
ResNet-18 keeps torchvision's BatchNorm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from fedrdskd.data import dataset_info

MODEL_NAMES = ("lenet5", "lenet5_half", "cnn", "resnet18")


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, as in DAFL/RDSKD's code.

    conv 5x5 -> pool -> conv 5x5 -> pool -> FC -> FC -> FC. For images smaller than
    32x32 the first convolution pads by 2 (the classic MNIST set-up), so the feature
    map is 5x5 at both 28x28 and 32x32.

    Parameters
    ----------
    num_classes : int
        Output logits.
    image_shape : tuple[int, int, int]
        Input (C, H, W); H and W must be at least 12.
    width : float (default: 1.0)
        Channel/unit multiplier: 1.0 gives 6-16-120-84, 0.5 the RDSKD student
        LeNet-5-half (3-8-60-42).
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], *,
                 width: float = 1.0) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        conv1, conv2, fc1, fc2 = (max(1, round(size * width)) for size in (6, 16, 120, 84))
        padding = 2 if min(height, width_px) < 32 else 0
        out_height, out_width = (((size + 2 * padding - 4) // 2 - 4) // 2
                                 for size in (height, width_px))
        if min(out_height, out_width) < 1:
            raise ValueError(f"Invalid image_shape={image_shape!r} for lenet5: height and "
                             "width must be at least 12 pixels.")
        self.features = nn.Sequential(
            nn.Conv2d(channels, conv1, kernel_size=5, padding=padding), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(conv1, conv2, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv2 * out_height * out_width, fc1), nn.ReLU(),
            nn.Linear(fc1, fc2), nn.ReLU(),
            nn.Linear(fc2, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self.classifier(self.features(images))


class SmallCNN(nn.Module):
    """The CNN of the FedAvg paper (McMahan et al., 2017), for any (C, H, W).

    Two 5x5 convolutions (32 and 64 channels, 'same' padding), each followed by ReLU
    and 2x2 max-pooling, a 512-unit fully connected layer with ReLU, and the output
    layer. About 2.2 M parameters at 3x32x32 and cheap enough for CPU clients.
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        if min(height, width) < 4:
            raise ValueError(f"Invalid image_shape={image_shape!r} for cnn: height and "
                             "width must be at least 4 pixels.")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self.classifier(self.features(images))


def resnet18_cifar(num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    """Torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool.

    The stem keeps 32x32 inputs at full resolution for the first stage (He et al.,
    2016, Sec. 4.2 use this stem for CIFAR-10). Global average pooling makes any
    H, W >= 8 work.
    """
    channels, height, width = image_shape
    if min(height, width) < 8:
        raise ValueError(f"Invalid image_shape={image_shape!r} for resnet18: height and "
                         "width must be at least 8 pixels.")
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


_BUILDERS: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "lenet5": lambda classes, shape: LeNet5(classes, shape),
    "lenet5_half": lambda classes, shape: LeNet5(classes, shape, width=0.5),
    "cnn": SmallCNN,
    "resnet18": resnet18_cifar,
}


def build_model(name: str, *, num_classes: int,
                image_shape: tuple[int, int, int]) -> nn.Module:
    """Build a freshly initialised model by name.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    num_classes : int
        Number of output logits (>= 1).
    image_shape : tuple[int, int, int]
        Input (C, H, W), e.g. ``DatasetInfo.image_shape``.

    Returns
    -------
    nn.Module
        Initialised with torch's global generator: seed it (e.g. under
        ``torch.random.fork_rng``) for a reproducible initial model.
    """
    if name not in _BUILDERS:
        raise ValueError(f"Invalid config value model.name={name!r}: allowed values are "
                         f"{', '.join(MODEL_NAMES)}.")
    if num_classes < 1:
        raise ValueError(f"Invalid num_classes={num_classes!r}: must be >= 1.")
    shape = tuple(int(size) for size in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"Invalid image_shape={image_shape!r}: must be (C, H, W) with "
                         "positive sizes.")
    return _BUILDERS[name](num_classes, shape)


def model_factory(name: str, dataset: str) -> Callable[[], nn.Module]:
    """A ``model_fn``: builds a fresh ``name`` model for ``dataset``'s classes and images.

    The ServerApp, the strategies and the ClientApp all build their models with it.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    dataset : str
        A name of :data:`fedrdskd.data.DATASETS`.

    Returns
    -------
    Callable[[], nn.Module]
        A picklable function of no arguments (see :func:`build_model` for seeding).
    """
    info = dataset_info(dataset)
    return functools.partial(build_model, name, num_classes=info.num_classes,
                             image_shape=info.image_shape)
