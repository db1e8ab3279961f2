"""Model/guide pairs: VAE (deep latent Gaussian model), GMM, PPCA, missing-pixel MNIST, the
Gaussian-mixture VAE (VaDE) and the semi-supervised VAE (M2)."""

from .dlgm import DLGM
from .mixture_vae import MixtureVAE
from .semi_supervised_vae import SemiSupervisedVAE
from .vae import VAE

__all__ = ["DLGM", "MixtureVAE", "SemiSupervisedVAE", "VAE"]
