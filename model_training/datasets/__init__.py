"""Dataset loaders; each yields ``(image_hwc uint8 RGB, mask_hw uint8 class ids)``."""
