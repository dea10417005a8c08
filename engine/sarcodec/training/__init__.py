"""Training pipeline of the default SAR codec weights (``python -m sarcodec.training``)."""
