import pytest
import torch

import pyro
from pyro_lvm import __version__, evaluate
from pyro_lvm.data import fixed_binarization
from pyro_lvm.models import VAE, gmm, missing, pixel_guides, ppca
from pyro_lvm.models.saving import FORMAT_VERSION, Saveable
from pyro_lvm.train import fit

from helpers import digits


def _trained_vae():
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=(32, 16))
    fit(vae.model, vae.guide, torch.rand(64, 784), num_epochs=2, batch_size=32, progress=False)
    return vae


def test_vae_round_trip_gives_identical_outputs(tmp_path):
    vae = _trained_vae()
    vae.save(tmp_path / "model.pt")
    # Plain tensors, numbers and strings only: the file loads without running pickled code.
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["library_version"] == __version__ and raw["format_version"] == FORMAT_VERSION
    assert raw["model"]["args"]["hidden_dims"] == (32, 16)
    loaded = VAE.load(tmp_path / "model.pt", device="cpu")
    x = torch.rand(10, 784)
    z = torch.randn(10, 4)
    assert all(torch.equal(a, b) for a, b in zip(vae.encode(x), loaded.encode(x)))  # loc, scale
    assert torch.equal(vae.decode(z), loaded.decode(z))
    # The whole pipeline too: the same importance-sampled log p(x) under the same seed.
    xb = fixed_binarization(x)
    pyro.set_rng_seed(1)
    before = evaluate.log_likelihood(vae.model, vae.guide, xb, num_samples=20)
    pyro.set_rng_seed(1)
    after = evaluate.log_likelihood(loaded.model, loaded.guide, xb, num_samples=20)
    assert torch.equal(before, after)


def test_every_kind_of_argument_round_trips(tmp_path):
    x = digits()[:200]
    cases = [
        ppca.PPCA(64, 3).double(),  # float64 weights stay float64
        gmm.GMM(torch.full((2,), 0.5), torch.randn(2, 3), torch.eye(3).expand(2, 3, 3)),
        missing.MissingPixelModel(VAE(z_dim=2, hidden_dims=(8,))),  # a model as argument
        ppca.AmortisedLinearGuide(64, 3, "diagonal"),
        pixel_guides.ConditionalPixelGuide(pixel_guides.ObservedGuide(VAE(z_dim=2, hidden_dims=(8,)),
                                                                      hidden_dims=(8,))),  # nested twice
    ]
    for module in cases:
        module.save(tmp_path / "m.pt")
        loaded = Saveable.load(tmp_path / "m.pt")
        assert type(loaded) is type(module)
        state, other = module.state_dict(), loaded.state_dict()
        assert state.keys() == other.keys()
        assert all(torch.equal(state[k], other[k]) and state[k].dtype == other[k].dtype for k in state)
    cases[0].save(tmp_path / "ppca.pt")
    pca = ppca.PPCA.load(tmp_path / "ppca.pt")
    assert torch.equal(pca.log_likelihood(x), cases[0].log_likelihood(x))


def test_bad_files_are_clear_errors(tmp_path):
    vae = _trained_vae()
    path = tmp_path / "model.pt"
    vae.save(path)
    with pytest.raises(FileNotFoundError, match="no model file"):
        VAE.load(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="holds a pyro_lvm.models.vae.VAE, not a"):
        ppca.PPCA.load(path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable pyro-lvm model file"):
        VAE.load(truncated)
    raw = torch.load(path, weights_only=True)
    newer = dict(raw, format_version=FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="upgrade pyro-lvm"):
        VAE.load(tmp_path / "newer.pt")
    other = dict(raw, model={**raw["model"], "args": {**raw["model"]["args"], "z_dim": 5}})
    torch.save(other, tmp_path / "other.pt")  # arguments of another architecture than the weights
    with pytest.raises(ValueError, match="do not fit"):
        VAE.load(tmp_path / "other.pt")
    torch.save(vae.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a pyro-lvm model file"):
        VAE.load(tmp_path / "bare.pt")
    ckpt = tmp_path / "checkpoint.pt"
    fit(vae.model, vae.guide, torch.rand(8, 784), num_epochs=1, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="load_checkpoint"):
        VAE.load(ckpt)


class _Holder(Saveable):
    """A module whose constructor takes anything (the models' constructors check theirs)."""

    def __init__(self, thing):
        super().__init__()
        self.thing = thing


def test_unstorable_argument_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot save constructor argument"):
        _Holder(lambda: torch.nn.ReLU()).save(tmp_path / "m.pt")



def test_dlgm_round_trip(tmp_path):
    from pyro_lvm.models import DLGM

    dlgm = DLGM(x_dim=20, z_dims=(4, 2), hidden_dims=((8,), (6,)))
    dlgm.save(tmp_path / "dlgm.pt")
    loaded = DLGM.load(tmp_path / "dlgm.pt")
    assert loaded.z_dims == (4, 2) and loaded.name != dlgm.name  # its own Pyro name
    state, other = dlgm.state_dict(), loaded.state_dict()
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
    x = torch.bernoulli(torch.rand(5, 20))
    pyro.set_rng_seed(3)
    before = evaluate.elbo(dlgm.model, dlgm.guide, x)
    pyro.set_rng_seed(3)
    assert torch.equal(before, evaluate.elbo(loaded.model, loaded.guide, x))


class FactorModel(Saveable):
    """A user's own model class, outside pyro_lvm (as in the README)."""

    def __init__(self, x_dim, z_dim, activation=torch.nn.Tanh):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(x_dim, z_dim))
        self.act = activation()


class Impostor(Saveable):
    def __init__(self, x_dim, z_dim, activation=torch.nn.Tanh):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(x_dim, z_dim))


def test_a_users_own_class_loads_by_the_call_on_that_class_only(tmp_path):
    # Before: FactorModel.load(path) refused the file ("outside ('pyro_lvm.', 'torch.')").
    model = FactorModel(5, 2, activation=torch.nn.ReLU)
    model.save(tmp_path / "factor.pt")
    loaded = FactorModel.load(tmp_path / "factor.pt")
    assert type(loaded) is FactorModel and isinstance(loaded.act, torch.nn.ReLU)
    assert torch.equal(loaded.W, model.W)
    # Only the class the call is made on: any other class the file names stays refused.
    for loader in (Saveable.load, VAE.load, Impostor.load):
        with pytest.raises(ValueError, match=r"names model class '.*FactorModel', outside "
                                             r"\('pyro_lvm.', 'torch.'\); refused \(a class of "
                                             r"your own loads as FactorModel.load\(path\)"):
            loader(tmp_path / "factor.pt")
    raw = torch.load(tmp_path / "factor.pt", weights_only=True)  # still tensors and strings only
    assert raw["model"]["class"].endswith("FactorModel")
