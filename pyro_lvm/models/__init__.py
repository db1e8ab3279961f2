"""Model/guide pairs: VAE (deep latent Gaussian model), GMM, PPCA, missing-pixel MNIST."""

from .dlgm import DLGM
from .vae import VAE

__all__ = ["DLGM", "VAE"]
