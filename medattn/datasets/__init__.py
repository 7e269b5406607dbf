"""medattn.datasets."""
