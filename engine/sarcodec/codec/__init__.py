"""The learned SAR codec: model, entropy coding, value domains and the container format."""
