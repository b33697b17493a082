"""The torch layer: networks, data, the Lightning module and model packages."""
