"""Network modules: UNet, attention, mask encoder and downsampler, autoencoder, text encoder."""
