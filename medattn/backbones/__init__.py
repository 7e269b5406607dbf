"""medattn.backbones."""
