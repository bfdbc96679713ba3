"""Losses: reduction, finiteness at extreme logits and 0/1 targets, gradients against naive formulas."""
import pytest
import torch
from cxr_fracture.losses import pixel_bce, weighted_bce, sample_class_weights, bernoulli_kl, soft_focal_loss

AL = torch.tensor([0.5, 1.5])
LOSSES = {
    'pixel_bce': lambda z, y, **k: pixel_bce(z, y, **k),
    'weighted_bce': lambda z, y, **k: weighted_bce(z, y, AL.to(z.dtype), **k),
    'bernoulli_kl': lambda z, y, **k: bernoulli_kl(z, y, **k),
    'soft_focal_loss': lambda z, y, **k: soft_focal_loss(z, y, **k),
    'soft_focal_alpha': lambda z, y, **k: soft_focal_loss(z, y, gamma=1.5, alpha=0.25, epsilon=0.3, **k),
}


def naive(name, z, q):
    p = torch.sigmoid(z)
    bce = -(q * p.log() + (1 - q) * (1 - p).log())
    if name == 'pixel_bce': return bce
    if name == 'weighted_bce': return AL.to(z.dtype)[:, None, None] * (1 + 9 * q) * bce
    if name == 'bernoulli_kl': return q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()
    if name == 'soft_focal_loss': return (0.9 * q + 0.05) * (q - p).abs() ** 2 * bce   # OXnet eq. 8
    if name == 'soft_focal_alpha': return (0.25 * q + 0.3) * (q - p).abs() ** 1.5 * bce


@pytest.fixture
def zq():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64) * 2
    q = torch.rand(2, 2, 3, 4, generator=g, dtype=torch.float64).clamp(0.01, 0.99)
    return z, q


@pytest.mark.parametrize('name', list(LOSSES))
def test_values_and_reduction(name, zq):
    z, q = zq
    ref = naive(name, z, q)
    f = LOSSES[name]
    torch.testing.assert_close(f(z, q, reduction='none'), ref)
    torch.testing.assert_close(f(z, q, reduction='image'), ref.mean(dim=(-2, -1)))
    torch.testing.assert_close(f(z, q), ref.mean(dim=(-2, -1)).mean())           # pixels, then images
    torch.testing.assert_close(f(z, q, reduction='sum'), ref.sum())
    with pytest.raises(ValueError, match='reduction'): f(z, q, reduction='batch')
    with pytest.raises(ValueError, match='same shape'): f(z, q[..., :2])


@pytest.mark.parametrize('name', list(LOSSES))
def test_gradients_match_naive_and_gradcheck(name, zq):
    z, q = zq
    z = z.clone().requires_grad_()
    f = LOSSES[name]
    g_ours = torch.autograd.grad(f(z, q), z)[0]
    g_naive = torch.autograd.grad(naive(name, z, q).mean(), z)[0]
    torch.testing.assert_close(g_ours, g_naive, atol=1e-10, rtol=1e-8)
    qs = q[:1, :, :2, :2]
    assert torch.autograd.gradcheck(lambda z_: f(z_, qs), (z[:1, :, :2, :2].detach().clone().requires_grad_(),))


@pytest.mark.parametrize('name', list(LOSSES))
@pytest.mark.parametrize('fill', [0.0, 1.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_finite_extreme_logits_and_constant_targets(name, fill, dtype):
    z = torch.tensor([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=dtype).repeat(2, 2, 2, 1).requires_grad_()
    y = torch.full_like(z, fill)
    v = LOSSES[name](z, y)
    v.backward()
    assert torch.isfinite(v) and v >= 0 and torch.isfinite(z.grad).all()
    # a perfect prediction costs (almost) nothing
    zp = torch.full((1, 2, 2, 2), 100.0 if fill else -100.0, dtype=dtype)
    assert LOSSES[name](zp, torch.full_like(zp, fill)) < 1e-6


def test_kl_properties(zq):
    z, q = zq
    assert (bernoulli_kl(z, q, reduction='none') >= 0).all()
    torch.testing.assert_close(bernoulli_kl(torch.logit(q), q), torch.zeros((), dtype=q.dtype), atol=1e-12, rtol=0)
    # the KL has the BCE's gradient (the entropy term is constant for the student)
    zr = z.clone().requires_grad_()
    torch.testing.assert_close(torch.autograd.grad(bernoulli_kl(zr, q), zr)[0], torch.autograd.grad(pixel_bce(zr, q), zr)[0])
    # no gradient reaches the target
    qr = q.clone().requires_grad_()
    bernoulli_kl(z, qr).backward() if bernoulli_kl(z, qr).requires_grad else None
    assert qr.grad is None
    # exact 0/1 targets
    q01 = (q > 0.5).double()
    torch.testing.assert_close(bernoulli_kl(z, q01), pixel_bce(z, q01))


def test_soft_focal_is_focal_loss_on_hard_targets():
    """On 0/1 targets eq. 8 is the focal loss with weight alpha+epsilon on positives, epsilon on negatives:
    torchvision's sigmoid_focal_loss at alpha' when alpha = 2 alpha' - 1 and epsilon = 1 - alpha'."""
    from torchvision.ops import sigmoid_focal_loss
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 2, 4, 4, generator=g)
    y = (torch.rand(2, 2, 4, 4, generator=g) > 0.7).float()
    torch.testing.assert_close(soft_focal_loss(z, y, reduction='none'), sigmoid_focal_loss(z, y, alpha=0.95, gamma=2.0, reduction='none'))
    torch.testing.assert_close(soft_focal_loss(z, y, alpha=0.5, epsilon=0.25, reduction='none'),
                               sigmoid_focal_loss(z, y, alpha=0.75, gamma=2.0, reduction='none'))
    torch.testing.assert_close(soft_focal_loss(z, y, alpha=0.0, epsilon=1.0, gamma=0.0), pixel_bce(z, y))


def test_soft_focal_eq8_on_anchor_outputs():
    "Detector layout (B, anchors, C): eq. 8 element by element, and the loss vanishes where student and teacher agree."
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 50, 2, generator=g, dtype=torch.float64)
    qt = torch.rand(3, 50, 2, generator=g, dtype=torch.float64)
    q = torch.sigmoid(z)
    ref = (0.9 * qt + 0.05) * (qt - q).abs() ** 2 * -(qt * q.log() + (1 - qt) * (1 - q).log())
    torch.testing.assert_close(soft_focal_loss(z, qt, reduction='none'), ref)
    torch.testing.assert_close(soft_focal_loss(z, qt, reduction='sum'), ref.sum())
    assert float(soft_focal_loss(z, torch.sigmoid(z), reduction='sum')) < 1e-20


def test_weighted_bce():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 2, 5, 5, generator=g)
    m = (torch.rand(3, 2, 5, 5, generator=g) > 0.8).float()
    w = torch.where(m > 0, 10.0, 1.0) * AL[:, None, None]
    torch.testing.assert_close(weighted_bce(z, m, AL), pixel_bce(z, m, weight=w))
    torch.testing.assert_close(weighted_bce(z, m, alpha_r=1.0), pixel_bce(z, m))
    torch.testing.assert_close(weighted_bce(z, m, alpha_r=3.0, reduction='image'),
                               pixel_bce(z, m, weight=1 + 2 * m, reduction='image'))
    with pytest.raises(ValueError, match='alpha_l has 3 values'): weighted_bce(z, m, torch.ones(3))


def test_weighted_bce_is_the_papers_form_on_hard_targets():
    "On 0/1 targets: -alpha_l (alpha_r y log p + (1-y) log(1-p)), the dynamic-sharpening paper's loss, per pixel and reduced."
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(3, 2, 6, 6, generator=g) > 0.7).double()
    al, ar = torch.tensor([0.4, 1.6], dtype=torch.float64), 10.0
    p = torch.sigmoid(z)
    paper = -al[:, None, None] * (ar * y * torch.log(p) + (1 - y) * torch.log1p(-p))
    torch.testing.assert_close(weighted_bce(z, y, al, alpha_r=ar, reduction='none'), paper)
    torch.testing.assert_close(weighted_bce(z, y, al, alpha_r=ar, reduction='image'), paper.mean((-2, -1)))
    torch.testing.assert_close(weighted_bce(z, y, al, alpha_r=ar), paper.mean())
    # soft targets (our extension): the whole BCE weighted by 1 + (alpha_r - 1) y
    q = torch.rand(3, 2, 6, 6, generator=g, dtype=torch.float64)
    ours = -al[:, None, None] * (1 + (ar - 1) * q) * (q * torch.log(p) + (1 - q) * torch.log1p(-p))
    torch.testing.assert_close(weighted_bce(z, q, al, alpha_r=ar, reduction='none'), ours)


def test_sample_class_weights():
    "alpha_l by inverse *sample* class frequency: positive against negative images of each class, mean 1 over images."
    labels = [[1, 0], [0, 0], [0, 1], [0, 0], [0, 0], [1, float('nan')]]
    w = sample_class_weights(labels)
    torch.testing.assert_close(w, torch.tensor([[6 / 4, 5 / 2], [6 / 8, 5 / 8]]))
    has = [[1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [0, 0]]                # only supervised pairs count
    torch.testing.assert_close(sample_class_weights(labels, has), torch.tensor([[2., 2.], [4 / 6, 4 / 6]]))
    torch.testing.assert_close(sample_class_weights([[1], [1]]), torch.tensor([[0.5], [1.]]))   # no negatives: n/2 (unused)

def test_pixel_bce_weight_masks_images():
    z = torch.randn(2, 1, 3, 3); m = torch.zeros(2, 1, 3, 3)
    only_first = pixel_bce(z, m, weight=torch.tensor([1.0, 0.0])[:, None, None, None], reduction='image')
    assert only_first[1] == 0 and only_first[0] > 0
