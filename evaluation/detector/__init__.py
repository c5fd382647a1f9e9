"""The saliency detector (from-scratch MSINet, or a U-Net decoder on a timm encoder): model, training with an
optional validation carve-out, prediction."""
