"""Model/guide pairs: VAE (deep latent Gaussian model), GMM, PPCA, missing-pixel MNIST."""

from .vae import VAE

__all__ = ["VAE"]
