"""torchvision's VGG16 as the reference layout for network g's encoder."""
from torchvision.models.vgg import cfgs, make_layers


def torchvision_vgg16_relu4_3():
    """torchvision's own VGG16 feature stack (without the big classifier), cut at relu4_3."""
    return make_layers(cfgs["D"])[:23]
