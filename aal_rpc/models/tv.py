"""`tv:resnet18` and `tv:vgg16`: torchvision's ImageNet-shaped networks (random weights), torchvision imported
only when one is asked for."""

from __future__ import annotations

from torch import nn

from aal_rpc._vision import import_torchvision
from aal_rpc.models.classifier import Classifier, image_shape


def tv_resnet18(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    c, _, _ = image_shape("tv:resnet18", input_shape)
    net = import_torchvision().models.resnet18(weights=None)
    if c != 3:
        net.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return Classifier(net, 512, num_classes)


def tv_vgg16(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    c, _, _ = image_shape("tv:vgg16", input_shape)
    net = import_torchvision().models.vgg16(weights=None)
    if c != 3:
        net.features[0] = nn.Conv2d(c, 64, kernel_size=3, padding=1)
    features = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *list(net.classifier.children())[:-1])
    return Classifier(features, 4096, num_classes)
