"""medattn.layers."""
