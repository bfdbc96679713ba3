"""FractureFPN: shapes, initialisation, weight loading without downloads, channels_last, configs."""
import subprocess, sys
import pytest
import torch
import torchvision
from cxr_fracture.model import (FractureFPN, ResNetTrunk, build_model, MODEL_CONFIGS, DEMO_SIZE, prob_map,
                                image_scores, find_imagenet_checkpoint, imagenet_checkpoint_names)

torch.set_num_threads(1)


def test_core_imports_without_optional_packages():
    # what torch/torchvision import themselves (e.g. tqdm) is not ours to avoid
    code = ("import sys, torch, torchvision; names = ('matplotlib', 'ipywidgets', 'fastcore', 'tqdm', 'yaml', 'pydicom', 'IPython'); "
            "base = {m for m in names if m in sys.modules}; "
            "import cxr_fracture.model, cxr_fracture.sharpen, cxr_fracture.losses; "
            "bad = [m for m in names if m in sys.modules and m not in base]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize('backbone,width', [('resnet18', 1.0), ('resnet34', 0.25), ('resnet50', 0.25)])
@pytest.mark.parametrize('stride', [4, 8])
def test_output_shape(backbone, width, stride):
    m = FractureFPN(backbone, stride=stride, fpn_channels=16, width=width).eval()
    with torch.no_grad(): z = m(torch.rand(2, 1, 64, 96))
    assert z.shape == (2, 2, 64 // stride, 96 // stride)
    y = m.prob_map(z)
    assert torch.equal(y, torch.sigmoid(z))
    assert torch.equal(m.image_scores(y), y.amax(dim=(-2, -1)))
    assert image_scores(prob_map(z)).shape == (2, 2)


def test_prior_bias_initial_maps_near_pi():
    m = FractureFPN('resnet18', stride=8, fpn_channels=32, width=0.5, prior=0.01).eval()
    with torch.no_grad(): y = torch.sigmoid(m(torch.rand(3, 1, 64, 64)))
    assert (y - 0.01).abs().max() < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError, match='stride'): FractureFPN('resnet18', stride=16)
    with pytest.raises(ValueError, match='backbone'): FractureFPN('resnet152')


@pytest.mark.parametrize('name', ['resnet18', 'resnet34', 'resnet50', 'resnet101'])
def test_trunk_matches_torchvision_names(name):
    ref = {k: v.shape for k, v in getattr(torchvision.models, name)().state_dict().items() if not k.startswith('fc.')}
    assert {k: v.shape for k, v in ResNetTrunk(name, in_channels=3).state_dict().items()} == ref


def test_load_torchvision_checkpoint_folds_conv1(tmp_path):
    tv = torchvision.models.resnet50()
    torch.save(tv.state_dict(), tmp_path / 'r50.pth')
    m = FractureFPN('resnet50', fpn_channels=16, weights=tmp_path / 'r50.pth')
    assert m.backbone.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(m.backbone.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    sd, ref = m.backbone.state_dict(), tv.state_dict()
    for k in sd:
        if k != 'conv1.weight': torch.testing.assert_close(sd[k], ref[k], msg=k)
    m3 = FractureFPN('resnet50', fpn_channels=16, in_channels=3, weights=tmp_path / 'r50.pth')
    torch.testing.assert_close(m3.backbone.conv1.weight, tv.conv1.weight)
    # a gray image through the folded conv1 = the RGB conv1 on the image replicated 3 times
    g = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(m.backbone.conv1(g), tv.conv1(g.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


def test_imagenet_from_hub_cache_without_download(tmp_path, monkeypatch):
    def no_download(*a, **k): raise AssertionError('must not download')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    names = imagenet_checkpoint_names('resnet18')
    assert 'resnet18-f37072fd.pth' in names
    with pytest.raises(FileNotFoundError) as e: FractureFPN('resnet18', weights='imagenet')
    msg = str(e.value)
    assert 'resnet18-f37072fd.pth' in msg and str(tmp_path / 'checkpoints') in msg and 'weights=PATH' in msg
    (tmp_path / 'checkpoints').mkdir()
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / 'checkpoints' / 'resnet18-f37072fd.pth')
    assert find_imagenet_checkpoint('resnet18') == tmp_path / 'checkpoints' / 'resnet18-f37072fd.pth'
    m = build_model('resnet18', fpn_channels=16, weights='imagenet')
    torch.testing.assert_close(m.backbone.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))


def test_resnet50_names_both_imagenet_versions(tmp_path):
    names = imagenet_checkpoint_names('resnet50')
    assert list(names)[0] == 'resnet50-0676ba61.pth' and 'resnet50-11ad3fa6.pth' in names
    with pytest.raises(FileNotFoundError, match='resnet50-0676ba61.pth'): find_imagenet_checkpoint('resnet50', hub_dir=tmp_path)


def test_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): FractureFPN('resnet18', weights=tmp_path / 'nope.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth'): FractureFPN('resnet18', weights=tmp_path / 'junk.pth')
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'r18.pth')
    with pytest.raises(ValueError, match='does not fit'): FractureFPN('resnet18', width=0.5, weights=tmp_path / 'r18.pth')


def test_whole_model_checkpoint_roundtrip(tmp_path):
    m = FractureFPN('resnet18', stride=8, fpn_channels=16, width=0.5)
    torch.save({'model': m.state_dict()}, tmp_path / 'model.pt')
    m2 = FractureFPN('resnet18', stride=8, fpn_channels=16, width=0.5, weights=tmp_path / 'model.pt')
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()): assert torch.equal(a, b), k


def test_channels_last_forward_backward():
    torch.manual_seed(0)
    m = FractureFPN('resnet18', stride=4, fpn_channels=16, width=0.25).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad(): ref = m(x)
    mc = m.to(memory_format=torch.channels_last)
    out = mc(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    mc.train(); mc(x.contiguous(memory_format=torch.channels_last)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mc.parameters())


def test_configs():
    assert {'demo', 'aals'} <= set(MODEL_CONFIGS)
    assert MODEL_CONFIGS['aals'] == dict(backbone='resnet50', stride=4, fpn_channels=256)
    d = build_model('demo')
    assert d.classes == ('rib_fracture', 'clavicle_fracture')
    assert d(torch.rand(1, 1, DEMO_SIZE, DEMO_SIZE)).shape == (1, 2, DEMO_SIZE // d.stride, DEMO_SIZE // d.stride)
    assert build_model('demo', classes=('fracture',)).head.out_channels == 1
    assert build_model({'backbone': 'resnet18', 'width': 0.25}, fpn_channels=8).lateral[0].out_channels == 8
    assert build_model(backbone='resnet34', width=0.25, stride=8).stride == 8
    with pytest.raises(ValueError, match='unknown model config'): build_model('nope')


def test_input_standardisation_rule(tmp_path):
    "Random init: no standardisation (bit for bit); ImageNet weights: ImageNet's gray statistics, inside the model, saved with it."
    from cxr_fracture.model import IMAGENET_GRAY, imagenet_stats
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64)
    r = FractureFPN('resnet18', stride=8, fpn_channels=16).eval()
    assert float(r.input_mean) == 0.0 and float(r.input_std) == 1.0 and 'input_mean' in r.state_dict()
    with torch.no_grad(): torch.testing.assert_close(r(x), r.head(r_features_unnormalised(r, x)), rtol=0, atol=0)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / 'r18.pth')
    m = FractureFPN('resnet18', stride=8, fpn_channels=16, weights=tmp_path / 'r18.pth').eval()
    assert IMAGENET_GRAY == (0.449, 0.226)
    torch.testing.assert_close(m.input_mean.flatten(), torch.tensor([0.449])); torch.testing.assert_close(m.input_std.flatten(), torch.tensor([0.226]))
    with torch.no_grad():   # the model standardises: same as the unstandardised path on (x - 0.449) / 0.226
        torch.testing.assert_close(m(x), m.head(r_features_unnormalised(m, (x - 0.449) / 0.226)))
        # ... which is what torchvision's conv1 sees for the standardised gray image in all three channels
        torch.testing.assert_close(m.backbone.conv1((x - 0.449) / 0.226), tv.conv1(((x - 0.449) / 0.226).expand(-1, 3, -1, -1)),
                                   atol=1e-4, rtol=1e-4)
    mean3, std3 = imagenet_stats(3)
    torch.testing.assert_close(mean3.flatten(), torch.tensor([0.485, 0.456, 0.406])); torch.testing.assert_close(std3.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    m3 = FractureFPN('resnet18', stride=8, fpn_channels=16, in_channels=3, weights=tmp_path / 'r18.pth')
    torch.testing.assert_close(m3.input_mean, mean3)
    # the statistics travel with the model: a rebuild without weights + load_state_dict (load_trained, init=) restores them
    torch.save({'model': m.state_dict()}, tmp_path / 'model.pt')
    back = FractureFPN('resnet18', stride=8, fpn_channels=16)
    back.load_state_dict(torch.load(tmp_path / 'model.pt', weights_only=True)['model'])
    torch.testing.assert_close(back.input_mean, m.input_mean); torch.testing.assert_close(back.input_std, m.input_std)
    w = FractureFPN('resnet18', stride=8, fpn_channels=16, weights=tmp_path / 'model.pt')   # a whole-model checkpoint keeps its own
    torch.testing.assert_close(w.input_std, m.input_std)
    # a checkpoint from before the buffers loads as unnormalised (how it was trained)
    old = {k: v for k, v in r.state_dict().items() if not k.startswith('input_')}
    o = FractureFPN('resnet18', stride=8, fpn_channels=16); o.input_mean.fill_(0.5); o.load_state_dict(old)
    assert float(o.input_mean) == 0.0 and float(o.input_std) == 1.0


def r_features_unnormalised(net, x):
    "FractureFPN.features without the standardisation (the reference path)."
    import torch.nn.functional as F
    cs = net.backbone(x)[net.first:]
    p = net.lateral[-1](cs[-1]); ps = [net.smooth[-1](p)]
    for i in range(len(cs) - 2, -1, -1):
        p = net.lateral[i](cs[i]) + F.interpolate(p, size=cs[i].shape[-2:], mode='nearest'); ps.insert(0, net.smooth[i](p))
    out = ps[0]
    for q in ps[1:]: out = out + F.interpolate(q, size=ps[0].shape[-2:], mode='bilinear', align_corners=False)
    return F.relu(out)
