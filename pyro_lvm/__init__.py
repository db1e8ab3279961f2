"""pyro-lvm: latent variable models written as Pyro model/guide pairs."""

__version__ = "0.1.0"
