"""Models: output shapes on every dataset shape, known parameter counts, architecture
choices (padding, no BatchNorm, CIFAR stem), reproducible initialisation, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedrdskd.data import DATASETS
from fedrdskd.models import MODEL_NAMES, build_model


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_on_every_dataset(name, dataset):
    info = DATASETS[dataset]
    model = build_model(name, num_classes=info.num_classes, image_shape=info.image_shape)
    model.eval()
    logits = model(torch.randn(3, *info.image_shape))
    assert logits.shape == (3, info.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_other_class_counts_and_backward(name):
    model = build_model(name, num_classes=7, image_shape=(3, 32, 32))
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_lenet5_has_the_classic_parameter_counts():
    # 6-16-120-84 LeNet-5: 156 + 2416 + 48120 + 10164 + 850 = 61706 at 28x28 (padding 2)
    # and at 32x32 (no padding): the feature map is 16x5x5 in both cases.
    assert parameter_count(build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))) == 61706
    assert parameter_count(build_model("lenet5", num_classes=10, image_shape=(1, 32, 32))) == 61706
    mnist = build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))
    assert mnist.features[0].padding == (2, 2)
    assert build_model("lenet5", num_classes=10, image_shape=(3, 32, 32)).features[0].padding == (0, 0)


def test_lenet5_half_has_half_the_channels_and_units():
    model = build_model("lenet5_half", num_classes=10, image_shape=(1, 28, 28))
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [3, 8] and linears == [60, 42, 10]
    # 78 + 608 + 12060 + 2562 + 430
    assert parameter_count(model) == 15738


def test_cnn_matches_the_fedavg_paper_parameter_count():
    # McMahan et al. (2017) report 1,663,370 parameters for their MNIST CNN.
    assert parameter_count(build_model("cnn", num_classes=10, image_shape=(1, 28, 28))) == 1663370


@pytest.mark.parametrize("name", ["lenet5", "lenet5_half", "cnn"])
def test_small_models_have_no_batchnorm(name):
    model = build_model(name, num_classes=10, image_shape=(3, 32, 32))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not list(model.buffers())


def test_resnet18_uses_the_cifar_stem():
    model = build_model("resnet18", num_classes=10, image_shape=(1, 28, 28))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    assert parameter_count(model) == 11172810


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_initialisation_is_reproducible_under_a_seed(name):
    def seeded(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(name, num_classes=10, image_shape=(3, 32, 32)).state_dict()

    first, second, other = seeded(0), seeded(0), seeded(1)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first
               if first[key].is_floating_point())


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="model.name='vgg': allowed values are lenet5, "
                                         "lenet5_half, cnn, resnet18"):
        build_model("vgg", num_classes=10, image_shape=(1, 28, 28))


@pytest.mark.parametrize("name, shape, message", [
    ("lenet5", (1, 8, 8), "at least 12 pixels"),
    ("cnn", (3, 2, 2), "at least 4 pixels"),
    ("resnet18", (3, 4, 4), "at least 8 pixels"),
    ("cnn", (3, 32), r"must be \(C, H, W\)"),
])
def test_bad_image_shapes_raise(name, shape, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, num_classes=10, image_shape=shape)


def test_bad_class_count_raises():
    with pytest.raises(ValueError, match="num_classes=0"):
        build_model("cnn", num_classes=0, image_shape=(3, 32, 32))
