"""Sharpening operators: properties (identity, monotone, fixed point, range), edge values, no gradient, plots, explorer."""
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np
import pytest
import torch
from cxr_fracture.sharpen import (aals, dynamic_sharpen, dynamic_params, symmetric_sharpen, sharpen, SHARPENERS,
                                  plot_aals_curves, plot_dynamic_curves, sharpen_explorer, stand_in_teacher_map)
from cxr_fracture.explore import phantom_teacher_map

X = torch.linspace(0, 1, 1001, dtype=torch.float64)
AALS_PARAMS = [(t, a0, ym) for t in (0.2, 0.4, 0.6) for a0 in (1.0, 2.0, 4.0, 10.0) for ym in (0.0, 0.3, 0.7, 1.0)]
DYN_PARAMS = [(t, a) for t in (0.05, 0.2, 0.35, 0.5, 0.9) for a in (1.0, 1.5, 4.0, 6.0, 12.0)]


def ops():
    return [('aals', lambda y, t, s: aals(y, t=t, a0=s, y_max=0.2)), ('dynamic', lambda y, t, s: dynamic_sharpen(y, t, s)),
            ('symmetric', lambda y, t, s: symmetric_sharpen(y, 1 / s))]


@pytest.mark.parametrize('t,a0,ym', AALS_PARAMS)
def test_aals_properties(t, a0, ym):
    y = aals(X, t=t, a0=a0, y_max=ym)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert (y.diff() >= -1e-12).all()                          # monotone
    assert (y >= X).all()                                      # asymmetric: max(S(y), y)
    torch.testing.assert_close(aals(torch.tensor([t], dtype=torch.float64), t=t, a0=a0, y_max=ym),
                               torch.tensor([t], dtype=torch.float64), atol=1e-9, rtol=0)  # fixed point
    assert y[-1] == 1.0
    if a0 == 1.0 or ym == 1.0: torch.testing.assert_close(y, X, atol=2e-6, rtol=0)  # a = 1: identity
    a = a0 - (a0 - 1) * ym                                     # eq. 6 directly, away from the clamp
    inner = X[10:-10]
    s = torch.sigmoid(a * torch.logit(inner) + (1 - a) * torch.logit(torch.tensor(t, dtype=torch.float64)))
    torch.testing.assert_close(y[10:-10], torch.maximum(s, inner))


@pytest.mark.parametrize('t,a', DYN_PARAMS)
def test_dynamic_properties(t, a):
    y = dynamic_sharpen(X, t, a)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert (y.diff() >= -1e-12).all()
    assert y[0] == 0 and abs(y[-1].item() - 1) < 1e-12
    torch.testing.assert_close(dynamic_sharpen(torch.tensor([t], dtype=torch.float64), t, a), torch.tensor([t], dtype=torch.float64))
    if a == 1.0: torch.testing.assert_close(y, X)
    # the paper's form of the upper branch is the same function
    up = X > t
    paper = (X[up] - t) ** (1 / a) / (1 - t) ** (1 / a - 1) + t
    torch.testing.assert_close(y[up], paper)
    torch.testing.assert_close(y[~up], X[~up] ** a / t ** (a - 1))
    if a > 1:  # sharpening: below t pushed down, above t pushed up
        assert (y[~up] <= X[~up] + 1e-12).all() and (y[up] >= X[up] - 1e-12).all()


def test_dynamic_params():
    assert dynamic_params(0.0) == (0.2, 6.0) and dynamic_params(1.0) == (0.5, 4.0)
    t, a = dynamic_params(0.4); assert abs(t - 0.3) < 1e-12 and a == 6.0
    t, a = dynamic_params(0.46); assert abs(t - 0.36) < 1e-12 and a == 4.0
    t, a = dynamic_params(np.array([0.1, 0.45, 0.7]))
    torch.testing.assert_close(t, torch.tensor([0.2, 0.35, 0.5])); torch.testing.assert_close(a, torch.tensor([6.0, 6.0, 4.0]))


@pytest.mark.parametrize('T', [0.1, 0.5, 1.0, 2.0])
def test_symmetric(T):
    y = symmetric_sharpen(X, T)
    assert torch.isfinite(y).all() and y[0] == 0 and y[-1] == 1 and (y.diff() >= 0).all()
    torch.testing.assert_close(y + symmetric_sharpen(1 - X, T), torch.ones_like(X))
    torch.testing.assert_close(symmetric_sharpen(torch.tensor([0.5]), T), torch.tensor([0.5]))
    if T == 1.0: torch.testing.assert_close(y, X)
    with pytest.raises(ValueError, match='T must be > 0'): symmetric_sharpen(X, 0.0)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize('method', ['aals', 'dynamic', 'symmetric'])
def test_edges_finite_in_range(method, dtype):
    y = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=dtype)      # exactly 0 and 1
    for out in (sharpen(method, y), sharpen(method, torch.zeros(1, 3, 3, dtype=dtype)), sharpen(method, torch.ones(1, 3, 3, dtype=dtype))):
        assert out.dtype == dtype and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    out = sharpen(method, y)
    assert out[0, 0, 1] == 1 and out[0, 1, 0] == 1      # 1 stays 1
    assert out[0, 0, 0] < 1e-3                           # 0 stays (nearly) 0


@pytest.mark.parametrize('shape', [(5, 7), (2, 2, 6, 6), (1, 2, 3, 4, 5)])
def test_any_leading_shape_and_numpy(shape):
    y = torch.rand(shape)
    for m in SHARPENERS:
        out = sharpen(m, y); assert out.shape == y.shape
        o_np = sharpen(m, y.numpy()); assert isinstance(o_np, np.ndarray) and o_np.shape == shape
        np.testing.assert_allclose(o_np, out.numpy(), atol=1e-6)


def test_aals_y_max_per_image_per_class():
    torch.manual_seed(0)
    y = torch.rand(3, 2, 5, 5) * torch.tensor([0.3, 0.9, 0.6])[:, None, None, None]
    out = aals(y, t=0.2, a0=5.0)
    for b in range(3):
        for c in range(2):
            ref = aals(y[b, c].flatten(), t=0.2, a0=5.0, y_max=y[b, c].max())
            torch.testing.assert_close(out[b, c].flatten(), ref)
    per_class = aals(y, t=torch.tensor([0.2, 0.5]), a0=5.0)    # per-class t broadcasts over (C, 1, 1)
    torch.testing.assert_close(per_class[:, 0], out[:, 0])


@pytest.mark.parametrize('W', [2, 5])   # W = C = 2: a (C,) y_max must not broadcast over the map's width
def test_aals_per_class_y_max_override(W):
    torch.manual_seed(1)
    y = torch.rand(3, 2, 4, W) * 0.8
    ym = torch.tensor([0.2, 0.9])
    out = aals(y, t=0.4, a0=6.0, y_max=ym)
    for c in range(2):
        torch.testing.assert_close(out[:, c], aals(y[:, c], t=0.4, a0=6.0, y_max=float(ym[c])))
    torch.testing.assert_close(aals(y.numpy(), t=0.4, a0=6.0, y_max=ym.numpy()), out.numpy())


def test_no_gradient_through_teacher():
    teacher = torch.nn.Conv2d(1, 2, 1)
    y = torch.sigmoid(teacher(torch.rand(2, 1, 4, 4)))
    assert y.requires_grad
    for m in SHARPENERS:
        out = sharpen(m, y)
        assert not out.requires_grad and out.grad_fn is None
    loss = (torch.rand(2, 2, 4, 4, requires_grad=True) - sharpen('aals', y)).pow(2).sum()
    loss.backward()
    assert teacher.weight.grad is None


def test_dispatch():
    y = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(sharpen('none', y), y)
    torch.testing.assert_close(sharpen('aals', y, t=0.3, a0=6.0), aals(y, t=0.3, a0=6.0))
    torch.testing.assert_close(sharpen('dynamic', y, t=0.3, a=6.0), dynamic_sharpen(y, 0.3, 6.0))
    torch.testing.assert_close(sharpen('dynamic', y, m=0.55), dynamic_sharpen(y, 0.45, 4.0))
    torch.testing.assert_close(sharpen('symmetric', y, T=0.3), symmetric_sharpen(y, 0.3))
    with pytest.raises(ValueError, match='unknown sharpening method'): sharpen('sharp', y)


def test_plots():
    from matplotlib.figure import Figure
    f = plot_aals_curves(y_maxes=(0.0, 0.5, 1.0), a0s=(2.0, 4.0))
    assert isinstance(f, Figure)
    ax1, ax2 = f.axes[:2]
    assert len(ax1.lines) == 3 + 2 and len(ax2.lines) == 2 + 2        # curves + identity + t marker
    np.testing.assert_allclose(ax1.lines[2].get_ydata(), ax1.lines[2].get_xdata(), atol=1e-5)  # y_max = 1: identity
    g = plot_dynamic_curves(a_values=(2.0, 4.0), medians=(0.2, 0.6, 0.8))
    assert isinstance(g, Figure) and len(g.axes[0].lines) == 2 + 2       # curves + t marker + identity
    assert len(g.axes[1].lines) == 2 + 1                                   # m = 0.6 and 0.8 give one (t, a): one curve
    assert [l.get_label() for l in g.axes[1].lines[:2]] == ['m ≤ 0.3: t = 0.20, a = 6', 'm ≥ 0.6: t = 0.50, a = 4']
    assert len(plot_aals_curves().axes[1].lines) == 4 + 2                  # the paper's a0 = 1, 4, 8, 16


def test_stand_in_teacher_map():
    "06's default map: painted from a phantom's boxes (no network), weak, higher at the fractures, soft."
    from cxr_fracture.data import box_masks
    d = stand_in_teacher_map()
    img, tm = d['image'], d['teacher_map']
    assert img.shape == (128, 128) and tm.shape == (16, 16) and tm.dtype == np.float32 and len(d['boxes']) == 3
    assert abs(tm.max() - 0.1) < 1e-6 and 0 < tm.min()                       # low sensitivity: far below t = 0.4
    inside = box_masks(np.array(d['boxes']), np.zeros(len(d['boxes']), int), 1, 128, 8)[0].numpy() > 0
    assert inside.any() and tm[inside].mean() > 2 * tm[~inside].mean()
    np.testing.assert_array_equal(tm, stand_in_teacher_map()['teacher_map'])   # deterministic
    assert not np.array_equal(tm, stand_in_teacher_map(seed=1)['teacher_map'])
    assert stand_in_teacher_map(size=64, stride=4, peak=0.3)['teacher_map'].shape == (16, 16)


def test_explorer_default_is_the_stand_in():
    pytest.importorskip('ipywidgets', reason='ipywidgets not installed (optional; the explorer needs it)')
    d = stand_in_teacher_map()
    ex = sharpen_explorer()
    np.testing.assert_array_equal(ex.teacher, d['teacher_map'])
    np.testing.assert_array_equal(ex.image, d['image'])
    assert ex.boxes == d['boxes']


@pytest.fixture(scope='module')
def real_map():
    "The demo network briefly trained on phantom box masks, and its map of a phantom image (explore, 09a; a few seconds, one thread)."
    return phantom_teacher_map(steps=30)


def test_phantom_teacher_map_is_the_networks(real_map):
    from cxr_fracture.data import box_masks
    d = real_map
    img, tm, net = d['image'], d['teacher_map'], d['net']
    assert img.shape == (128, 128) and tm.shape == (16, 16) and not net.training
    with torch.no_grad(): ref = torch.sigmoid(net(torch.from_numpy(img)[None, None]))[0, 0].numpy()
    np.testing.assert_allclose(tm, ref, atol=1e-6)                           # sigma(net(image)), not a drawn blob
    inside = box_masks(np.array(d['boxes']), np.zeros(len(d['boxes']), int), 1, 128, 8)[0].numpy() > 0
    assert inside.any() and tm[inside].mean() > 2 * tm[~inside].mean()     # the training did something
    assert 0 < tm.min() < tm.max() < 1 and len(np.unique(tm)) > 100        # a soft, non-constant map


def test_explorer_headless(real_map):
    pytest.importorskip('ipywidgets', reason='ipywidgets not installed (optional; the explorer needs it)')
    ex = sharpen_explorer(teacher_map=real_map['teacher_map'], image=real_map['image'], boxes=real_map['boxes'])
    np.testing.assert_allclose(ex.teacher, real_map['teacher_map'])
    assert abs(ex.sliders['y_max'].value - float(real_map['teacher_map'].max())) < 0.01   # starts at the map's maximum
    x = ex.x
    s = ex.sliders
    assert set(s) == {'a0', 't_aals', 'y_max', 't_dyn', 'a_dyn'}
    # the AALS curve follows a0, t and y_max
    a_before = ex.lines['aals'].get_ydata().copy()
    s['a0'].value = 9.0; s['y_max'].value = 0.2; s['t_aals'].value = 0.3
    a_after = ex.lines['aals'].get_ydata()
    assert np.abs(a_after - a_before).max() > 0.05
    np.testing.assert_allclose(a_after, aals(x, t=0.3, a0=9.0, y_max=0.2), atol=1e-9)
    # ... and the sharpened map is the teacher map scaled to y_max, then sharpened
    y = ex.scaled_teacher()
    assert abs(y.max() - 0.2) < 1e-6
    np.testing.assert_allclose(ex.images['teacher'].get_array(), y, atol=1e-6)
    np.testing.assert_allclose(ex.images['aals'].get_array(), aals(y, t=0.3, a0=9.0), atol=1e-6)
    before_map = ex.images['aals'].get_array().copy()          # the whole map lies below t = 0.3: left as it is
    np.testing.assert_allclose(before_map, y, atol=1e-6)
    s['t_aals'].value = 0.1                                    # now its top lies above t: AALS raises it, the rest stays
    after_map = ex.images['aals'].get_array()
    np.testing.assert_allclose(after_map, aals(y, t=0.1, a0=9.0), atol=1e-6)
    assert (after_map >= before_map - 1e-7).all() and (after_map - before_map).max() > 0.3
    np.testing.assert_allclose(after_map[y <= 0.1], y[y <= 0.1], atol=1e-6)
    # the dynamic curve follows t and a
    d_before = ex.lines['dynamic'].get_ydata().copy()
    s['t_dyn'].value = 0.5; s['a_dyn'].value = 2.0
    d_after = ex.lines['dynamic'].get_ydata()
    assert np.abs(d_after - d_before).max() > 0.05
    np.testing.assert_allclose(d_after, dynamic_sharpen(x, 0.5, 2.0), atol=1e-9)
    np.testing.assert_allclose(ex.images['dynamic'].get_array(), dynamic_sharpen(y, 0.5, 2.0), atol=1e-6)
    assert 't=0.50' in ex.axes[1, 1].get_title()


def test_explorer_custom_map():
    pytest.importorskip('ipywidgets', reason='ipywidgets not installed (optional; the explorer needs it)')
    m = np.random.default_rng(0).random((8, 12)).astype(np.float32) * 0.5
    ex = sharpen_explorer(teacher_map=m, image=np.random.rand(32, 48))
    assert ex.images['teacher'].get_array().shape == (8, 12)
    assert ex.images['teacher_overlay'].get_extent() == [0, 48, 32, 0]     # the map stretched over the image
    ex.sliders['a0'].value = 1.0
    np.testing.assert_allclose(ex.lines['aals'].get_ydata(), ex.x, atol=1e-5)   # a0 = 1: identity
    with pytest.raises(ValueError, match='one \\(h, w\\) map'): sharpen_explorer(teacher_map=np.zeros((1, 8, 8)))
