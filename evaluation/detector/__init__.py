"""A compact saliency detector (U-Net decoder on a timm encoder): model, training, prediction."""
