import math

import pytest
import torch
import torch.nn.functional as F

import pyro
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyro_lvm.models import SemiSupervisedVAE
from pyro_lvm.train import fit

K, D, Z = 3, 6, 2


def _tiny(alpha=1.7, seed=0):
    torch.manual_seed(seed)
    return SemiSupervisedVAE(x_dim=D, z_dim=Z, num_classes=K, hidden_dims=(4,), classifier_dims=(5,),
                             alpha=alpha).double()


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g, dtype=torch.float64).round()
    y = torch.tensor([0, 2, -1, 1, 7, 2])[:n]  # any value where unlabelled
    labelled = torch.tensor([True, True, False, True, False, False])[:n]
    return x, y, labelled


def _enumerated_guide_trace(m, *data):
    return poutine.trace(poutine.enum(m.guide, first_available_dim=-2)).get_trace(*data)


def _loss(m, *data, seed=3):
    """TraceEnum_ELBO's loss, and the enumerated guide trace holding the draws of z it used (the
    same seed: z is the guide's only random draw)."""
    pyro.set_rng_seed(seed)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, *data)
    pyro.set_rng_seed(seed)
    return loss, _enumerated_guide_trace(m, *data)


def _by_hand(m, x, y, labelled, z):
    """The paper's -L(x, y) + alpha log q(y | x) (labelled) and -U(x) (unlabelled), summed, from
    the networks run on concatenated inputs (not the model's split first layers)."""
    total = 0.0
    log_q_y = torch.log_softmax(m.classifier(x), -1)
    for n in range(x.shape[0]):
        bound = []
        for label in range(K):
            onehot = F.one_hot(torch.tensor(label), K).double()
            zn = z[label, n]
            loc, raw = m.encoder(torch.cat([x[n], onehot])).chunk(2)
            scale = F.softplus(raw) + 1e-3
            p = torch.sigmoid(m.decoder(torch.cat([zn, onehot])))
            log_px = sum(math.log(pi if xi else 1 - pi) for pi, xi in zip(p.tolist(), x[n].tolist()))
            log_pz = sum(-0.5 * v * v - 0.5 * math.log(2 * math.pi) for v in zn.tolist())
            log_qz = sum(-0.5 * ((v - mu) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                         for v, mu, s in zip(zn.tolist(), loc.tolist(), scale.tolist()))
            bound.append(log_px + math.log(1 / K) + log_pz - log_qz)  # -L(x_n, label)
        if labelled[n]:
            total += bound[y[n]] + m.alpha * log_q_y[n, y[n]].item()
        else:
            q = log_q_y[n].exp().tolist()
            total += sum(qy * (b - math.log(qy)) for qy, b in zip(q, bound))
    return -total


@pytest.mark.parametrize("rows", [[0, 1, 3], [2, 4, 5], list(range(6))], ids=["labelled", "unlabelled", "mixed"])
def test_loss_per_row_is_the_paper_bound_by_hand(rows):
    m = _tiny()
    x, y, labelled = (t[rows] for t in _data())
    loss, trace = _loss(m, x, y, labelled)
    z = trace.nodes["z"]["value"]  # (K, B, Z): one draw per enumerated class
    assert z.shape == (K, len(rows), Z)
    assert loss == pytest.approx(_by_hand(m, x, y, labelled, z), rel=1e-10)


def test_alpha_adds_the_classifier_log_likelihood_of_labelled_rows():
    x, y, labelled = (t[[0, 1, 3]] for t in _data())
    with_alpha, _ = _loss(_tiny(alpha=2.5), x, y, labelled)
    m0 = _tiny(alpha=0.0)
    without, _ = _loss(m0, x, y, labelled)
    log_q = torch.log_softmax(m0.classifier(x), -1).gather(1, y[:, None]).sum().item()
    assert with_alpha == pytest.approx(without - 2.5 * log_q, rel=1e-10)


def test_trace_shapes_and_the_point_mass_at_known_labels():
    m = _tiny()
    x, y, labelled = _data()
    trace = _enumerated_guide_trace(m, x, y, labelled)
    assert trace.nodes["y"]["value"].shape == (K, 1)
    probs = trace.nodes["y"]["fn"].probs
    assert torch.equal(probs[labelled], F.one_hot(y[labelled], K).double())
    # Sampled (not enumerated), labelled rows draw their label and z is (B, Z).
    sampled = poutine.trace(m.guide).get_trace(x, y, labelled)
    assert sampled.nodes["z"]["value"].shape == (6, Z)
    assert torch.equal(sampled.nodes["y"]["value"][labelled], y[labelled])
    assert m.classify(x).shape == (6,) and m.classify(x).dtype == torch.int64
    assert torch.equal(m.classify(x), m.classifier(x).argmax(-1))
    images = m.sample(torch.tensor([0, 2, 2]), generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, D) and ((images >= 0) & (images <= 1)).all()


def test_fit_trains_the_classifier_from_few_labels():
    """Two classes of 20-pixel images around two prototypes, 4 labels among 400: the one fit
    loop with the enum loss brings the held-out error far below chance."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(2, 20, generator=g).round()

    def draw(n):
        labels = torch.randint(2, (n,), generator=g)
        flip = torch.rand(n, 20, generator=g) < 0.1
        return (protos[labels] != flip).double(), labels

    x, y = draw(400)
    labelled = torch.zeros(400, dtype=torch.bool)
    labelled[torch.cat([torch.nonzero(y == c)[:2, 0] for c in (0, 1)])] = True  # 2 per class
    y = torch.where(labelled, y, -1)
    torch.manual_seed(0)
    m = SemiSupervisedVAE(x_dim=20, z_dim=2, num_classes=2, hidden_dims=(16,), classifier_dims=(16,),
                          alpha=0.1 * 400 / 4).double()
    fit(m.model, m.guide, (x, y, labelled), loss="enum", lr=3e-2, num_epochs=10, batch_size=100,
        progress=False)
    x_test, y_test = draw(500)
    error = (m.classify(x_test) != y_test).double().mean().item()
    # With 500 test points a 5% error has a standard error of 1%; chance is 50%.
    assert error < 0.05


@pytest.mark.parametrize("data, match", [
    (lambda x, y, l: (x, torch.where(l, 3, y), l), r"labels y of labelled rows must lie in \[0, 3\)"),
    (lambda x, y, l: (x, torch.where(l, -2, y), l), r"labels y of labelled rows must lie in \[0, 3\)"),
    (lambda x, y, l: (x, y.int(), l), "y must be int64 labels.*dtype torch.int32"),
    (lambda x, y, l: (x, y.double(), l), "y must be int64 labels"),
    (lambda x, y, l: (x, y, l.long()), "labelled must be a boolean mask"),
    (lambda x, y, l: (x, y, l[:-1]), "first dimension N"),
    (lambda x, y, l: (x, y[:, None], l), r"y must be int64 labels of shape \(6,\)"),
    (lambda x, y, l: (x.float(), y, l), "dtype torch.float64"),
])
def test_bad_labels_refused_at_the_door_of_fit(data, match):
    m = _tiny()
    with pytest.raises(ValueError, match=match):
        fit(m.model, m.guide, data(*_data()), loss="enum", num_epochs=1, batch_size=6, progress=False)


def test_bad_labels_refused_in_the_body_and_unlabelled_rows_take_any_value():
    m = _tiny()
    x, y, labelled = _data()
    loss, _ = _loss(m, x, torch.where(labelled, y, 10**6), labelled)  # unlabelled: any int64 value
    assert math.isfinite(loss)
    with pytest.raises(ValueError, match="labelled must be a boolean mask of shape"):
        m.guide(x, y, labelled[:5])
    with pytest.raises(ValueError, match="come together"):
        m.model(x, y, None)
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="must lie in"):
        m.guide(x, torch.where(labelled, K, y), labelled)


@pytest.mark.parametrize("call, match", [
    (lambda: SemiSupervisedVAE(num_classes=0), "num_classes"),
    (lambda: SemiSupervisedVAE(alpha=-1.0), "alpha"),
    (lambda: SemiSupervisedVAE(alpha=float("nan")), "alpha"),
    (lambda: SemiSupervisedVAE(classifier_dims=500), "classifier_dims"),
    (lambda: _tiny().classify(torch.rand(3, D + 1, dtype=torch.float64)), "x must have shape"),
    (lambda: _tiny().sample(torch.tensor([0, K])), "labels in"),
    (lambda: _tiny().sample(torch.tensor([0.0])), "int64"),
    (lambda: _tiny().sample(torch.tensor([[0]])), r"shape \(n,\)"),
    (lambda: _tiny().encode(torch.rand(3, D, dtype=torch.float64), torch.zeros(3)), "int64"),
    (lambda: _tiny().encode(torch.rand(3, D, dtype=torch.float64), torch.tensor([0, 1, K])),
     "labels in"),
    (lambda: _tiny().encode(torch.full((3, D), 2.0, dtype=torch.float64),
                            torch.tensor([0, 1, 0])), r"x must lie in \[0.0, 1.0\]"),
    (lambda: _tiny().decode(torch.tensor([K]), torch.zeros(1, Z, dtype=torch.float64)),
     "labels in"),
    (lambda: _tiny().decode(torch.tensor([0]), torch.zeros(1, Z + 1, dtype=torch.float64)),
     "z must have"),
    (lambda: _tiny().decode(torch.tensor([0]), torch.full((1, Z), float("nan"),
                                                          dtype=torch.float64)), "NaN"),
])
def test_bad_arguments_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
