"""medattn.models."""
