"""The two-stage trainer on a tiny phantom: every method end to end, exact resume after SIGKILL, DDP on gloo."""
import json, os, re, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F

from cxr_fracture.train import METHODS, TrainConfig, train, load_data, read_log, load_trained, load_checkpoint

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


@pytest.fixture(scope='session')
def phantom(tmp_path_factory):
    "A 32-image phantom at 96 px with its 64 px cache, written once per session."
    root = tmp_path_factory.mktemp('phantom')
    load_data(TrainConfig(data='phantom', root=str(root), phantom_n=32, phantom_size=96, size=64, out=str(root/'x')))
    return root


def tiny(phantom, out, **kw):
    d = dict(data='phantom', root=str(phantom), phantom_n=32, phantom_size=96, size=64, batch_size=4, lr=1e-3,
             epochs_stage1=1, epochs_stage2=1, limit_batches=2, out=str(out))
    d.update(kw)
    return d


@pytest.mark.parametrize('method', list(METHODS))
def test_every_method_runs(phantom, tmp_path, method):
    torch.set_num_threads(1)
    r = train(tiny(phantom, tmp_path/method, method=method))
    out = tmp_path/method
    for f in ('model.pt', 'stage1/model.pt', 'metrics_log.jsonl', 'checkpoints/last.pt', 'config.json'):
        assert (out/f).is_file(), f
    log = read_log(out)
    assert log['stage'].tolist() == [1, 2] and (log['images_per_s'] > 0).all()
    assert all(torch.isfinite(torch.tensor(log[k].to_list())).all() for k in ('loss', 'loss_sup', 'loss_distill'))
    if METHODS[method]['teacher'] != 'none': assert log['loss_distill'].iloc[1] > 0  # stage 2 distils
    ck = torch.load(out/'model.pt', weights_only=True)
    assert ck['config']['method'] == method and ck['classes'] == ['rib_fracture', 'clavicle_fracture']
    last = torch.load(out/'checkpoints'/'last.pt', weights_only=True)
    assert (last['teacher'] is not None) == (METHODS[method]['teacher'] == 'ema')
    assert (last['temporal'] is not None) == (METHODS[method]['teacher'] == 'temporal')
    net = load_trained(out/'model.pt')
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 2, 8, 8)


def test_init_skips_stage1_and_config_roundtrip(phantom, tmp_path):
    torch.set_num_threads(1)
    a = train(tiny(phantom, tmp_path/'pre', method='supervised', epochs_stage2=0))
    assert a['stage1_model'].endswith('stage1/model.pt') and read_log(tmp_path/'pre')['stage'].tolist() == [1]
    train(tiny(phantom, tmp_path/'mt', method='mean_teacher', init=a['stage1_model']))
    assert read_log(tmp_path/'mt')['stage'].tolist() == [2]
    c = TrainConfig(method='dynamic', t=0.3)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match='unknown TrainConfig'): TrainConfig.from_dict({'lr_': 1})


SCRIPT = textwrap.dedent('''
    import sys, time, json, torch
    torch.set_num_threads(1)
    from cxr_fracture import train as T
    cfg, resume, slow = json.loads(sys.argv[1]), sys.argv[2] == '1', float(sys.argv[3])
    if slow:
        step = T._Run.train_step
        def slow_step(self, b, stage): time.sleep(slow if stage == 2 else 0); return step(self, b, stage)
        T._Run.train_step = slow_step
    T.train(cfg, resume=resume)
''')


def _strict_equal(a, b, path='ck'):
    "Recursive, strict: same types, same keys, tensors equal (dtype, shape, values; NaN = NaN), other values ==."
    assert type(a) is type(b), f'{path}: {type(a).__name__} != {type(b).__name__}'
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape, f'{path}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}'
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                     and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f'{path}: keys {list(a)} != {list(b)}'
        for k in a: _strict_equal(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{path}: length {len(a)} != {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)): _strict_equal(x, y, f'{path}[{i}]')
    elif isinstance(a, float) and a != a: assert b != b, f'{path}: nan != {b}'
    else: assert a == b, f'{path}: {a!r} != {b!r}'


def test_strict_equal_is_strict():
    _strict_equal({'a': [1, 2.5, None, torch.tensor([1., float('nan')])]}, {'a': [1, 2.5, None, torch.tensor([1., float('nan')])]})
    for x, y in [({'t': [0.3]}, {'t': [0.31]}), ({'s': 1}, {'s': 2}), ({'s': 1}, {'s': 1.0}), ({'s': None}, {'s': 0}),
                 ({'a': 1}, {'b': 1}), ([1, 2], [1]), (torch.ones(2), torch.ones(2, dtype=torch.float64)),
                 ({'s': True}, {'s': 1})]:
        with pytest.raises(AssertionError): _strict_equal(x, y)


def _checkpoint(path):
    "The checkpoint at `path`, or None while it is absent or being replaced."
    try: return torch.load(path, weights_only=True)
    except Exception: return None


@pytest.mark.parametrize('method', ['dynamic', 'temporal_ensemble'])
def test_resume_after_sigkill_is_exact(phantom, tmp_path, method):
    "Killed (SIGKILL) in the middle of the last stage-2 epoch and resumed: every checkpointed value equals an uninterrupted run's."
    script = tmp_path/'run.py'; script.write_text(SCRIPT)
    ref = tiny(phantom, tmp_path/'ref', method=method, epochs_stage1=1, epochs_stage2=2, limit_batches=3, checkpoint_every=1)
    cut = {**ref, 'out': str(tmp_path/'cut')}
    subprocess.run([sys.executable, str(script), json.dumps(ref), '0', '0'], check=True, env=ENV, timeout=120)
    p = subprocess.Popen([sys.executable, str(script), json.dumps(cut), '0', '0.3'], env=ENV)
    ck = tmp_path/'cut'/'checkpoints'/'last.pt'
    t0, seen = time.time(), None
    try:  # kill on what the checkpoint holds: stage 2, its last epoch (temporal buffers and dynamic m from the first), mid-epoch
        while time.time() - t0 < 120 and p.poll() is None:
            c = _checkpoint(ck) if ck.is_file() else None
            if c is not None:
                seen = (c['stage'], c['epoch'], c['step'])
                if seen[0] == 2 and seen[1] == 1 and seen[2] > 0: break
            time.sleep(0.02)
        assert p.poll() is None, f'the run ended before it could be killed (last checkpoint seen: {seen})'
        p.send_signal(signal.SIGKILL); p.wait()
    finally:
        if p.poll() is None: p.kill(); p.wait()
    killed_at = torch.load(ck, weights_only=True)
    assert (killed_at['stage'], killed_at['epoch']) == (2, 1) and killed_at['step'] > 0, 'not killed mid-epoch of stage 2'
    if method == 'temporal_ensemble': assert bool((killed_at['temporal']['t'] > 0).any())
    if method == 'dynamic':
        assert killed_at['dynamic']['t'] is not None and any(killed_at['dynamic']['scores'])
    subprocess.run([sys.executable, str(script), json.dumps(cut), '1', '0'], check=True, env=ENV, timeout=120)
    a, b = (torch.load(tmp_path/d/'checkpoints'/'last.pt', weights_only=True) for d in ('ref', 'cut'))
    assert a.keys() == b.keys()
    for k in a:
        if k == 'acc': _strict_equal({**a[k], 'time': 0.0}, {**b[k], 'time': 0.0}, k)  # wall time differs
        elif k == 'config': _strict_equal({**a[k], 'out': ''}, {**b[k], 'out': ''}, k)
        else: _strict_equal(a[k], b[k], k)
    _strict_equal(torch.load(tmp_path/'ref'/'model.pt', weights_only=True)['model'],
                  torch.load(tmp_path/'cut'/'model.pt', weights_only=True)['model'], 'model.pt')
    la, lb = read_log(tmp_path/'ref'), read_log(tmp_path/'cut')
    assert la[['stage', 'epoch', 'loss', 'val_mean_auroc']].equals(lb[['stage', 'epoch', 'loss', 'val_mean_auroc']])


def _run_keeping_checkpoints(cfg, monkeypatch):
    "train(cfg), keeping a copy of every checkpoint written: [(stage, epoch, step, path)]."
    import shutil
    from cxr_fracture.train import _Run
    kept, save = [], _Run.save_checkpoint
    def keep(self):
        save(self)
        dst = Path(cfg['out'])/f'ck_{len(kept)}.pt'; shutil.copy(self.ckdir/'last.pt', dst)
        kept.append((self.stage, self.epoch, self.step, dst))
    monkeypatch.setattr(_Run, 'save_checkpoint', keep)
    train(cfg)
    monkeypatch.setattr(_Run, 'save_checkpoint', save)
    return kept


def test_checkpoint_sampler_state_and_resume_checks(phantom, tmp_path, monkeypatch):
    """Every checkpoint's sampler state is at the trainer's (epoch, step), mid-epoch ones included; a resume with
    settings that change the run raises, naming the fields and the checkpoint; free fields may change."""
    import shutil
    torch.set_num_threads(1)
    cfg = tiny(phantom, tmp_path/'r', method='aals', limit_batches=3, checkpoint_every=1, phantom_seed=0)
    kept = _run_keeping_checkpoints(cfg, monkeypatch)
    assert any(step > 0 for _, _, step, _ in kept)
    for stage, epoch, step, path in kept:
        ck = torch.load(path, weights_only=True)
        assert (ck['stage'], ck['epoch'], ck['step']) == (stage, epoch, step)
        assert (ck['sampler']['epoch'], ck['sampler']['position']) == (epoch, step), (stage, epoch, step, ck['sampler'])
    mid = next(p for stage, epoch, step, p in kept if stage == 2 and step > 0)
    def resume_from(ck_path, name, **kw):
        out = tmp_path/name; (out/'checkpoints').mkdir(parents=True)
        shutil.copy(ck_path, out/'checkpoints'/'last.pt')
        return train({**cfg, 'out': str(out), **kw}, resume=True)
    for i, (kw, bad) in enumerate([(dict(batch_size=2), "['batch_size']"), (dict(lr=1e-4, seed=1), "['lr', 'seed']"),
                                   (dict(p_fraction=0.25), "['p_fraction']"), (dict(epochs_stage2=2), "['epochs_stage2']")]):
        with pytest.raises(ValueError, match=r"last\.pt: cannot resume.*" + re.escape(bad) + ".*fresh out folder"):
            resume_from(mid, f'bad{i}', **kw)
    ck = torch.load(mid, weights_only=True)   # same settings, but a sampler that would draw other batches
    ck['sampler']['seed'] += 1; torch.save(ck, tmp_path/'tampered.pt')
    with pytest.raises(ValueError, match='sampler checkpoint has seed'): resume_from(tmp_path/'tampered.pt', 'tampered')
    r = resume_from(mid, 'moved', num_workers=1, progress=False, checkpoint_every=2)  # only free fields differ
    a, b = (torch.load(Path(d)/'checkpoints'/'last.pt', weights_only=True) for d in (cfg['out'], r['out']))
    assert a['global_step'] == b['global_step']
    for k in ('model', 'optimizer', 'teacher'): _strict_equal(a[k], b[k], k)


class _PoolNet(torch.nn.Module):
    "A deterministic stand-in teacher: class c's probability map is the image average-pooled to the map grid."
    def __init__(self, stride, n_classes): super().__init__(); self.stride, self.C = stride, n_classes
    def forward(self, x): return torch.logit(F.avg_pool2d(x, self.stride).repeat(1, self.C, 1, 1).clamp(1e-4, 1 - 1e-4))


@pytest.fixture(scope='module')
def stage2_run(phantom, tmp_path_factory):
    "A _Run in stage 2 (EMA teacher replaced by _PoolNet), one augmented batch (spatial augmentation only) and its rows."
    from cxr_fracture.train import _Run, DistInfo, _to_device
    from cxr_fracture.data import Augment
    torch.set_num_threads(1)
    run = _Run(TrainConfig.from_dict(tiny(phantom, tmp_path_factory.mktemp('target'), method='aals', stride=4)), DistInfo())
    run.train_ds.augment = Augment(rotate=20, flip=0.0, translate=0.1, gamma=None, contrast=None, brightness=0.0)  # no intensity change
    run.stage, run.epoch, run.step = 2, 0, 0
    run.setup_stage(2)
    run.teacher = _PoolNet(run.train_ds.stride, len(run.classes))
    b = _to_device(next(iter(run.loader(2, 0, 0))), torch.device('cpu'))
    rows = torch.arange(len(b['image']))
    return run, b, rows


def test_teacher_target_is_in_the_students_frame(stage2_run):
    "The teacher sees the un-augmented image; its map comes back in the student's (augmented) frame."
    from cxr_fracture.data import warp_map, invert_theta
    run, b, rows = stage2_run
    assert not torch.allclose(b['image'], b['image_orig'])                 # the batch is augmented (rotated, shifted)
    p = run.teacher_target(b, rows)
    s = run.train_ds.stride
    assert p.shape == (len(rows), len(run.classes), b['image'].shape[-2] // s, b['image'].shape[-1] // s)
    student_frame = F.avg_pool2d(b['image'], s).expand_as(p)              # DS(augmented image)
    teacher_frame = F.avg_pool2d(b['image_orig'], s).expand_as(p)         # DS(un-augmented image)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))        # away from the border (warp padding)
    inverse = warp_map(teacher_frame, invert_theta(b['theta'].float()))    # the warp the wrong way round
    err, wrong, wrong_way = ((x - student_frame)[inner].abs().mean() for x in (p, teacher_frame, inverse))
    assert err < 0.3 * min(wrong, wrong_way) and err < 0.03, (float(err), float(wrong), float(wrong_way))


def test_distillation_target_of_each_method(stage2_run):
    "mean_teacher: the raw teacher map; aals, symmetric, dynamic: that map through the method's sharpening and parameters."
    from cxr_fracture.sharpen import aals, symmetric_sharpen, dynamic_sharpen, dynamic_params
    from cxr_fracture.model import image_scores
    import numpy as np
    run, b, rows = stage2_run
    m0, dyn0 = run.m, run.dyn
    raw = run.teacher_target(b, rows)
    w = torch.ones(len(rows), len(run.classes))
    cfg = run.cfg
    try:
        got = {}
        for method in ('mean_teacher', 'aals', 'symmetric', 'dynamic'):
            run.m = METHODS[method]
            got[method], ps = run.distill_target(b, rows, w)
            torch.testing.assert_close(ps, image_scores(raw))   # the scores are the unsharpened teacher's
        torch.testing.assert_close(got['mean_teacher'], raw, rtol=0, atol=0)
        torch.testing.assert_close(got['aals'], aals(raw, t=cfg.t, a0=cfg.a0))
        torch.testing.assert_close(got['symmetric'], symmetric_sharpen(raw, cfg.temperature))
        # dynamic, first epoch: (t, a) from the running median of the scores so far, this batch's included
        prev = [[0.05, 0.1], [0.9]]
        run.dyn = {'t': None, 'a': None, 'm': None, 'scores': [list(v) for v in prev]}
        med = torch.tensor([float(np.median(prev[c] + image_scores(raw)[:, c].tolist())) for c in range(len(run.classes))])
        t, a = dynamic_params(med)
        torch.testing.assert_close(run.distill_target(b, rows, w)[0], dynamic_sharpen(raw, t[:, None, None], a[:, None, None]))
        # later epochs: the previous epoch's (t, a)
        run.dyn = {'t': [0.3, 0.45], 'a': [6.0, 4.0], 'm': [0.4, 0.55], 'scores': [[], []]}
        want = dynamic_sharpen(raw, torch.tensor([0.3, 0.45])[:, None, None], torch.tensor([6.0, 4.0])[:, None, None])
        torch.testing.assert_close(run.distill_target(b, rows, w)[0], want)
        for x, y in (('mean_teacher', 'aals'), ('aals', 'symmetric'), ('symmetric', 'dynamic')):
            assert (got[x] - got[y]).abs().max() > 1e-3, (x, y)   # the methods do differ on this map
    finally: run.m, run.dyn = m0, dyn0


DDP_SCRIPT = textwrap.dedent('''
    import sys, json, os, torch
    torch.set_num_threads(1)
    from cxr_fracture.train import TrainConfig, init_distributed, _Run
    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    di = init_distributed(cfg.device)
    run = _Run(cfg, di); run.run()
    torch.save({'teacher': run.teacher.state_dict(), 'model': run.model.state_dict(),
                'dyn': run.dyn}, os.path.join(cfg.out, f'rank{di.rank}.pt'))
''')


def test_ddp_gloo_two_processes_agree(phantom, tmp_path):
    "torchrun with 2 CPU processes (gloo): the students and EMA teachers of both ranks end identical."
    script = tmp_path/'ddp.py'; script.write_text(DDP_SCRIPT)
    cfg = tiny(phantom, tmp_path/'ddp', method='dynamic', batch_size=2, device='cpu', limit_batches=3)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        str(script), json.dumps(cfg)], env=ENV, timeout=150, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path/'ddp'/f'rank{k}.pt', weights_only=True) for k in (0, 1))
    _strict_equal(a['teacher'], b['teacher'], 'teacher'); _strict_equal(a['model'], b['model'], 'model')
    assert a['dyn'] == b['dyn']
    log = read_log(tmp_path/'ddp')
    assert (log['world_size'] == 2).all() and log['images'].tolist() == [12, 12]  # 3 steps x 2 ranks x 2 images


def test_cli_and_plot(phantom, tmp_path):
    from cxr_fracture.cli import main
    from cxr_fracture.train import plot_log
    out = tmp_path/'cli'
    rc = main(['train', '--data', 'phantom', '--root', str(phantom), '--method', 'symmetric', '--out', str(out),
               '-c', 'size=64', '-c', 'phantom_n=32', '-c', 'phantom_size=96', '-c', 'batch_size=4',
               '-c', 'epochs_stage1=1', '-c', 'epochs_stage2=1', '-c', 'limit_batches=1'])
    assert rc == 0 and (out/'model.pt').is_file()
    assert main(['train', '--out', str(out), '-c', 'nope=1']) == 2
    fig = plot_log(out)
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) >= 3
