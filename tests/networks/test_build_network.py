"""Building a network from its config: unknown names and options are refused."""
import pytest

from wwbl.networks import WSOLUNet, build_network


def test_unknown_backbone_and_architecture():
    with pytest.raises(ValueError, match="unknown backbone"):
        WSOLUNet("alexnet", pretrained_backbone=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("unet3d")


@pytest.mark.parametrize("architecture,option", [("grounding_net", "max_decoder_channels"),
                                                 ("wsol_unet", "decoder_channels"), ("grounding_net", "widht")])
def test_build_network_names_an_option_the_architecture_does_not_take(architecture, option):
    with pytest.raises(ValueError, match=f"'{option}'.*'{architecture}'"):
        build_network(architecture, **{option: 8})
