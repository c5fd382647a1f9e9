"""GLIGEN-sem latent diffusion stack used by DefFiller."""
