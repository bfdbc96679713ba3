"""The trainer on a tiny phantom: every method end to end, each method's target and loss as its paper defines them
(on hand-built batches), the registry, the shared stage 1, P boxes never trained on, exact resume after SIGKILL,
DDP on gloo."""
import inspect, json, os, re, signal, subprocess, sys, time, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cxr_fracture.train as T
from cxr_fracture.train import (METHODS, Method, TrainConfig, train, load_data, read_log, load_trained, load_checkpoint,
                                register_method, stage1_config, resolved_losses, make_dataset)
from cxr_fracture.data import warp_map, invert_theta, ROLE_CODE
from cxr_fracture.sharpen import aals, dynamic_sharpen, dynamic_params
from cxr_fracture.losses import bernoulli_kl

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


@pytest.fixture(scope='session')
def phantom(tmp_path_factory):
    "A 32-image phantom at 96 px with its 64 px cache, written once per session."
    root = tmp_path_factory.mktemp('phantom')
    load_data(TrainConfig(data='phantom', root=str(root), phantom_n=32, phantom_size=96, size=64, out=str(root/'x')))
    return root


def tiny(phantom, out, **kw):
    d = dict(data='phantom', root=str(phantom), phantom_n=32, phantom_size=96, size=64, batch_size=4, lr=1e-3,
             epochs_stage1=1, epochs_stage2=1, limit_batches=2, p_fraction=0.5, out=str(out))
    d.update(kw)
    return d


@pytest.mark.parametrize('method', list(METHODS))
def test_every_method_runs(phantom, tmp_path, method):
    torch.set_num_threads(1)
    E2 = 2 if method == 'temporal_ensemble' else 1   # Temporal Ensembling has targets from its second epoch
    r = train(tiny(phantom, tmp_path/method, method=method, epochs_stage2=E2))
    out = tmp_path/method
    for f in ('model.pt', 'metrics_log.jsonl', 'config.json'): assert (out/f).is_file(), f
    assert Path(r['stage1_model']).is_file() and Path(r['stage1_model']).parent.parent == tmp_path/'stage1'
    log = read_log(out)
    M = METHODS[method]
    assert log['stage'].tolist() == [1] + [2] * (E2 if M.distills else 0)
    assert all(torch.isfinite(torch.tensor(log[k].to_list())).all() for k in ('loss', 'loss_sup', 'loss_distill'))
    teacher = issubclass(M, T.EMATeacherMethod) or getattr(M, 'sfl', False)   # a Mean Teacher (OXnet's SFL: of the detector)
    if M.distills:
        if getattr(M, 'sfl', True):   # OXnet's DAA and DAA + GPA learn from P through image labels, not a teacher
            assert log['loss_distill'].iloc[-1] > 0 and log['distilled_images'].iloc[-1] > 0   # stage 2 distils
        last = torch.load(out/'checkpoints'/'last.pt', weights_only=True)
        assert last['config']['method'] == method and last['stage'] == 2
        assert ('ema' in last['method']) == bool(teacher)
        assert ('ensemble' in last['method']) == (method == 'temporal_ensemble')
    else: assert not (out/'checkpoints').exists()
    ck = torch.load(out/'model.pt', weights_only=True)
    assert ck['config']['method'] == method and ck['classes'] == ['rib_fracture', 'clavicle_fracture']
    assert ck['stage'] == (2 if M.distills else 1)                 # the arm's model comes from its own stage
    net = load_trained(out/'model.pt')
    if M.arch == 'fpn': assert net(torch.rand(1, 1, 64, 64)).shape == (1, 2, 8, 8)
    else: assert net.predict(torch.rand(1, 1, 64, 64), map_side=8)['scores'].shape == (1, 2)   # classifier, detector


def test_stage1_is_shared_and_keyed_by_its_settings(phantom, tmp_path):
    torch.set_num_threads(1)
    a = train(tiny(phantom, tmp_path/'aals', method='aals'))
    s1 = Path(a['stage1_model']); t0 = s1.stat().st_mtime_ns
    b = train(tiny(phantom, tmp_path/'mt', method='mean_teacher', t=0.2))
    assert b['stage1_model'] == a['stage1_model'] and s1.stat().st_mtime_ns == t0        # reused, not retrained
    assert read_log(tmp_path/'mt')['stage'].tolist() == [1, 2]
    c = train(tiny(phantom, tmp_path/'dyn', method='dynamic'))
    assert c['stage1_model'] != a['stage1_model']                                       # weighted BCE: its own stage 1
    assert load_checkpoint(c['stage1_model'])['config']['sup_loss'] == 'wbce'
    d = train(tiny(phantom, tmp_path/'dyn2', method='dynamic', sup_loss='bce'))
    assert d['stage1_model'] == a['stage1_model']                                       # same settings: shared again
    e = train(tiny(phantom, tmp_path/'mt2', method='mean_teacher', init=a['stage1_model']))
    assert read_log(tmp_path/'mt2')['stage'].tolist() == [2] and e['stage1_model'] == a['stage1_model']
    f = train(tiny(phantom, tmp_path/'mt_lr', method='mean_teacher', lr_stage2=1e-5))
    assert f['stage1_model'] == a['stage1_model'] and s1.stat().st_mtime_ns == t0        # stage 2's rate: the same stage 1
    assert read_log(tmp_path/'mt_lr')['lr'].tolist() == [1e-3, 1e-5]                    # and stage 2 runs at it
    with pytest.raises(ValueError, match='unknown TrainConfig'): TrainConfig.from_dict({'lr_': 1})


def _plateau_rates(scores, lr0):
    "The rates a max-mode plateau schedule with patience 0 and no threshold gives the epochs after each score."
    best, lr, out = -float('inf'), lr0, []
    for s in scores:
        out.append(lr)
        if s > best: best = s
        else: lr /= 10
    return out


def test_plateau_schedule_follows_the_validation_score(phantom, tmp_path):
    """OXnet's schedule: a detector watches validation mAP, a map network mean AUROC; every epoch's logged rate is the
    one the scores before it give (divided by ten after an epoch without a rise, patience 0), stage by stage."""
    torch.set_num_threads(1)
    reduced = []
    for method, monitor in [('oxnet', 'map'), ('mean_teacher', 'auroc')]:
        train(tiny(phantom, tmp_path/method, method=method, scheduler='plateau', plateau_patience=0,
                   epochs_stage1=3, epochs_stage2=2, limit_batches=1))
        log = read_log(tmp_path/method)
        assert log['stage'].tolist() == [1, 1, 1, 2, 2], method
        assert set(log['plateau_monitor']) == {monitor}, method
        assert log['plateau_score'].notna().all(), method
        if monitor == 'auroc': assert log['plateau_score'].tolist() == log['val_mean_auroc'].tolist()
        else: assert log['plateau_score'].between(0, 1).all()
        for stage, g in log.groupby('stage'):   # each stage starts at its own rate with a fresh schedule
            assert g['lr'].tolist() == pytest.approx(_plateau_rates(g['plateau_score'].tolist(), 1e-3), rel=1e-9), (method, stage)
            reduced += [(method, stage)] if g['lr'].min() < 1e-3 else []
    assert reduced, 'no epoch without a rise: the schedule was never exercised'
    with pytest.raises(ValueError, match="plateau_monitor='map' needs a detector"):
        train(tiny(phantom, tmp_path/'bad', method='mean_teacher', scheduler='plateau', plateau_monitor='map'))


def test_select_by_keeps_the_chosen_epoch(phantom, tmp_path, monkeypatch, capfd):
    """`select_by` picks the epoch kept as model.pt (the papers' validation AUROC by default): a detector's validation
    mAP, or the last epoch; each is its own stage 1, and a setting that cannot be scored is refused before training."""
    torch.set_num_threads(1)
    base = dict(epochs_stage1=3, limit_batches=1)
    maps, real = iter([0.2, 0.5, 0.3]), T.validation_map   # the tiny phantom's mAPs are all 0: given ones show the rule
    monkeypatch.setattr(T, 'validation_map', lambda res, stride: (real(res, stride), next(maps))[1])
    r = train(tiny(phantom, tmp_path/'ret_map', method='retinanet', select_by='map', **base))   # the supervised arm: stage 1's model
    monkeypatch.undo()
    log = read_log(tmp_path/'ret_map')
    assert set(log['select_by']) == {'map'} and log['select_score'].tolist() == [0.2, 0.5, 0.3]
    ck = load_checkpoint(tmp_path/'ret_map'/'model.pt')
    assert (ck['epoch'], ck['metrics']['select_score'], ck['config']['select_by']) == (2, 0.5, 'map')
    fig = T.plot_log(tmp_path/'ret_map')   # the figure shows it, on its own axis beside the AUROC panel's
    curve = [(a, l) for a in fig.axes for l in a.lines if l.get_label() == 'mAP (AP40-75)']
    assert len(curve) == 1 and list(curve[0][1].get_ydata()) == [0.2, 0.5, 0.3] and curve[0][0] is not fig.axes[1]
    assert curve[0][0].get_ylim()[1] >= 0.5 and curve[0][0].bbox.bounds == fig.axes[1].bbox.bounds
    assert 'validation mAP was 0 in every epoch' not in capfd.readouterr().err
    train(tiny(phantom, tmp_path/'ret_map0', method='retinanet', select_by='map', epochs_stage1=2, limit_batches=1))   # the real mAPs: all 0
    assert read_log(tmp_path/'ret_map0')['select_score'].tolist() == [0.0, 0.0]
    assert "select_by='map', and the validation mAP was 0 in every epoch: model.pt is epoch 1" in capfd.readouterr().err
    auroc = train(tiny(phantom, tmp_path/'ret_auroc', method='retinanet', **base))
    assert auroc['stage1_model'] != r['stage1_model']                          # which epoch stage 1 keeps: its own folder
    assert 'select_by' not in read_log(tmp_path/'ret_auroc')                    # the default logs as before
    ck_a = load_checkpoint(tmp_path/'ret_auroc'/'model.pt')
    assert ck_a['epoch'] == int(np.argmax(read_log(tmp_path/'ret_auroc')['val_mean_auroc'].to_numpy())) + 1
    m = train(tiny(phantom, tmp_path/'mt_last', method='mean_teacher', select_by='last', epochs_stage1=2, epochs_stage2=2, limit_batches=1))
    assert read_log(tmp_path/'mt_last')['select_score'].tolist() == [1., 2., 1., 2.]
    ck, s1 = load_checkpoint(tmp_path/'mt_last'/'model.pt'), load_checkpoint(m['stage1_model'])
    assert (ck['stage'], ck['epoch'], s1['stage'], s1['epoch']) == (2, 2, 1, 2)
    with pytest.raises(ValueError, match="select_by='map' needs a detector"):
        train(tiny(phantom, tmp_path/'bad', method='mean_teacher', select_by='map'))
    def no_step(self, b): raise AssertionError('a step was trained before the refusal')
    monkeypatch.setattr(T._Run, 'train_step', no_step)   # refused before the first step, not after an epoch
    with pytest.raises(ValueError, match=r"select_by='map' needs boxes on the validation split, and its 1 image\(s\)"):
        train(tiny(phantom, tmp_path/'no_box', method='retinanet', select_by='map', limit_val=1))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="select_by='x' is not one of"): TrainConfig(select_by='x').check()
    from types import SimpleNamespace as NS
    fake = lambda boxes, labels: NS(boxes_of=lambda i: boxes[i], labels=np.array(labels), classes=['a', 'b'])   # a data set's parsed boxes
    no_box = fake([(np.zeros((0, 4)), np.zeros(0, np.int64))] * 3, [[1., 0.], [0., 0.], [1., 1.]])
    with pytest.raises(ValueError, match=r"select_by='map' needs boxes on the validation split, and its 3 image\(s\)"):
        T._check_val_boxes(no_box, None, 'select_by')
    box_on_negative = fake([(np.ones((1, 4)), np.array([1]))], [[1., 0.]])
    with pytest.raises(ValueError, match='no box on a positive'): T._check_val_boxes(box_on_negative, None, 'select_by')
    located = fake([(np.zeros((0, 4)), np.zeros(0, np.int64)), (np.ones((1, 4)), np.array([1]))], [[0., 0.], [0., 1.]])
    T._check_val_boxes(located, None, 'select_by')                            # a located positive: fine
    with pytest.raises(ValueError, match='its 1 image'): T._check_val_boxes(located, 1, 'plateau_monitor')   # limit_val hides it


def test_a_new_method_is_an_addition(phantom, tmp_path):
    "A method registered from outside runs through the unchanged loop; the loop never branches on the method's name."
    src = inspect.getsource(T._Run) + ''.join(inspect.getsource(getattr(T._Run, n)) for n in
                                              ('train_step', 'run_epoch', 'end_epoch', 'sampler', 'setup', 'run', 'state', 'load'))
    assert not re.search(r"method\s*==|method\s+in\s|\.name\s*==|isinstance\([^)]*Method", src)
    seen = []
    @register_method
    class HalfTarget(T.MapMethod):
        name, uses_labels = 'half_target_test', True
        def teacher(self, b, rows):
            seen.append(len(rows)); k = len(rows)
            return torch.full((k, len(self.run.classes), self.run.map_side, self.run.map_side), 0.5), b['theta'][rows]
    try:
        train(tiny(phantom, tmp_path/'new', method='half_target_test'))
        assert seen and sum(seen) > 0 and read_log(tmp_path/'new')['loss_distill'].iloc[-1] > 0
    finally: METHODS.pop('half_target_test')


def test_training_never_sees_a_p_box(phantom):
    "The phantom writes boxes for P images (evaluation truth): the training data set reads none, the test set reads them."
    cfg = TrainConfig(**tiny(phantom, phantom/'x'))
    tr, te = make_dataset(cfg, 'train'), make_dataset(cfg, 'train', augment=False)
    df, classes, cache = load_data(cfg)
    P = np.nonzero(tr.roles == ROLE_CODE['P'])[0]
    assert len(P) and all(len(tr[int(i)]['boxes']) == 0 and tr[int(i)]['masks'].sum() == 0 for i in P)
    from cxr_fracture.data import FractureDataset
    every = FractureDataset(df, cache=cache, stride=8, classes=tuple(classes), split='train')
    assert sum(len(every[int(i)]['boxes']) for i in P) > 0                        # they exist ...
    test = make_dataset(cfg, 'test')
    tp = np.nonzero(test.roles == ROLE_CODE['P'])[0]
    assert sum(len(test[int(i)]['boxes']) for i in tp) > 0                         # ... and the test split reads them


# ---- each method's target and loss on a hand-built batch ---------------------------------------------------------

class _PoolNet(torch.nn.Module):
    "A deterministic stand-in network: class c's logit map is the image average-pooled to the map grid."
    def __init__(self, stride, n_classes): super().__init__(); self.stride, self.C = stride, n_classes; self.w = torch.nn.Parameter(torch.ones(()))
    def forward(self, x): return torch.logit(F.avg_pool2d(x, self.stride).repeat(1, self.C, 1, 1).clamp(1e-4, 1 - 1e-4)) * self.w


@pytest.fixture()
def stage2_run(phantom, tmp_path):
    "A stage-2 _Run of a method, with a batch (spatial augmentation only) of every row distillable."
    from cxr_fracture.data import Augment
    torch.set_num_threads(1)
    def make(method, **kw):
        run = T._Run(TrainConfig.from_dict(tiny(phantom, tmp_path/method, method=method, stride=4, **kw)), T.DistInfo(), stage=2)
        run.train_ds.augment = Augment(rotate=20, flip=0.0, translate=0.1, gamma=None, contrast=None, brightness=0.0)
        run.setup()
        b = T._to_device(next(iter(run.loader(0, 0))), torch.device('cpu'))
        return run, b, torch.arange(len(b['image']))
    return make


def _frames_ok(p, b, s):
    "p is the un-augmented image's pooled map moved into the student's frame (not the wrong way round)."
    student = F.avg_pool2d(b['image'], s).expand_as(p); teacher = F.avg_pool2d(b['image_orig'], s).expand_as(p)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    err, wrong = (p - student)[inner].abs().mean(), (teacher - student)[inner].abs().mean()
    return err < 0.3 * wrong and err < 0.03


def test_dynamic_is_its_own_teacher_sharpened_then_warped_with_kl(stage2_run):
    run, b, rows = stage2_run('dynamic')
    assert run.sup_kind == 'wbce' and run.dis_kind == 'kl' and not hasattr(run.M, 'ema')
    run.M.epoch_start(0)
    P = np.nonzero(run.train_ds.roles == ROLE_CODE['P'])[0]
    S = run.scores_of(P); lab = run.train_ds.labels[P]
    m = [float(np.median(S[lab[:, c] == 1, c])) if (lab[:, c] == 1).any() else 0.5 for c in range(2)]   # no P positive: 0.5
    t, a = dynamic_params(torch.tensor(m))
    assert run.M.dyn['m'] == pytest.approx(m) and run.M.dyn['t'] == pytest.approx(t.tolist())
    run.model = _PoolNet(run.train_ds.stride, 2)                                     # a network whose maps are not ~0
    got = run.M.target(b, rows)
    with torch.no_grad(): p = torch.sigmoid(run.model(b['image_orig']))           # the network itself, un-augmented view
    want = warp_map(dynamic_sharpen(p, t[:, None, None], a[:, None, None]), b['theta'])   # DS first, then f_Affi
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    wrong_order = dynamic_sharpen(warp_map(p, b['theta']), t[:, None, None], a[:, None, None])
    assert (got - wrong_order).abs().max() > 1e-4
    z = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(T.distill_loss(run.dis_kind, z, got[:2, :, :8, :8]), bernoulli_kl(z, got[:2, :, :8, :8], reduction='image'))
    # alpha_l: inverse sample class frequency of positive against negative supervised images
    ds = run.train_ds; has = np.stack([ds.has_mask(i) for i in range(len(ds))])
    for c in range(2):
        pos, neg = ((ds.labels[:, c] == 1) & has[:, c]).sum(), ((ds.labels[:, c] == 0) & has[:, c]).sum()
        assert float(run.alpha_l[0, c]) == pytest.approx((pos + neg) / (2 * max(pos, 1)))
        assert float(run.alpha_l[1, c]) == pytest.approx((pos + neg) / (2 * neg))


def test_aals_and_mean_teacher_targets(stage2_run):
    for method in ('aals', 'mean_teacher'):
        run, b, rows = stage2_run(method)
        run.M.ema.module = _PoolNet(run.train_ds.stride, 2)
        got = run.M.target(b, rows)
        raw = torch.sigmoid(run.M.ema.module(b['image_orig']))
        want = warp_map(aals(raw, t=run.cfg.t, a0=run.cfg.a0) if method == 'aals' else raw, b['theta'])
        torch.testing.assert_close(got, want)
        if method == 'mean_teacher': assert _frames_ok(got, b, run.train_ds.stride)
        assert resolved_losses(run.cfg)[1] == ('kl' if method == 'aals' else 'mse')
    # Mean Teacher distils every channel of a P image, AALS only its positive classes
    L = torch.tensor([[1., 0]]); R = torch.tensor([ROLE_CODE['P']]); H = torch.zeros(1, 2, dtype=torch.bool)
    assert T.pair_weights(L, R, H, METHODS['mean_teacher'].uses_labels)[1].tolist() == [[1., 1.]]
    assert T.pair_weights(L, R, H, METHODS['aals'].uses_labels)[1].tolist() == [[1., 0.]]


def test_pi_model_target_is_a_second_view_moved_into_the_first(stage2_run, monkeypatch):
    from cxr_fracture.data import Augment
    monkeypatch.setattr(T, 'Augment', lambda: Augment(gamma=None, contrast=None, brightness=0.0))   # spatial part only
    run, b, rows = stage2_run('pi_model')
    run.model = _PoolNet(run.train_ds.stride, 2)
    got = run.M.target(b, rows)
    s = run.train_ds.stride
    student = F.avg_pool2d(b['image'], s).expand_as(got)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert (got - student)[inner].abs().mean() < 0.05                              # a second view, back in frame 1 ...
    same_view = warp_map(torch.sigmoid(run.model(b['image_orig'])), b['theta'])
    assert (got - same_view).abs().max() > 1e-3                                     # ... which is not the first view


def test_temporal_ensembling_evaluates_twice_and_accumulates_the_undisturbed_output(stage2_run):
    run, b, rows = stage2_run('temporal_ensemble')
    calls = []
    net = run.model; orig = net.forward
    def counted(x): calls.append(x.clone()); return orig(x)
    net.forward = counted
    sw, dw = T.pair_weights(b['labels'], b['role'], b['has_mask'], False)
    drows = torch.nonzero(dw.sum(1) > 0).flatten()
    assert len(drows) and not run.M.ready(b)[drows].any()                            # no target in the first epoch
    r1 = run.train_step(b)
    assert r1['n_distilled'] == 0
    undisturbed = [x for x in calls if x.shape[0] == len(drows)]
    assert len(calls) == 2 and torch.equal(undisturbed[0], b['image_orig'][drows])   # twice: augmented, and un-augmented
    net.eval()
    with torch.no_grad(): z_now = torch.sigmoid(orig(b['image_orig'][drows]))       # (weights moved by the step since)
    net.train()
    slots = run.M._slots(b, drows)
    assert run.M.zn[slots].eq(1).all()
    run.M.epoch_end(0)                                                                # folded in at the epoch's end
    assert run.M.ready(b)[drows].all()
    tgt = run.M.ens.targets(slots)
    zs = tgt.float()                                                                  # one epoch: Z/(1-alpha) = z
    assert (zs - z_now).abs().max() < 0.05 and float(run.M.zn.sum()) == 0
    torch.testing.assert_close(run.M.target(b, drows), warp_map(run.M.ens.targets(slots), b['theta'][drows]))
    net.forward = orig
    r2 = run.train_step(b)
    assert r2['n_distilled'] == len(drows) and r2['loss_distill'] > 0


def test_loss_forms(stage2_run):
    "sum: eq. 5's sums over the batch divided by B; mean: each term over its own pairs."
    run, b, rows = stage2_run('aals', loss_form='sum', p_fraction=None)
    B = len(b['image'])
    ls = torch.rand(B, 2); ld = torch.rand(B, 2); sw = torch.zeros(B, 2); dw = torch.zeros(B, 2); sw[0] = 1; dw[1, 0] = 1
    _, a, c = T.combine_losses(ls, sw, ld, dw, 'sum')
    assert float(a) == pytest.approx(float(ls[0].sum()) / B) and float(c) == pytest.approx(float(ld[1, 0]) / B)
    _, a, c = T.combine_losses(ls, sw, ld, dw, 'mean')
    assert float(a) == pytest.approx(float(ls[0].mean())) and float(c) == pytest.approx(float(ld[1, 0]))
    # the sampler: p_fraction None gives P the data's share of a batch (at least one slot)
    assert run.p_share() == pytest.approx(max(run.n_p / (run.n_p + run.n_sup), 1 / run.cfg.batch_size))


SCRIPT = textwrap.dedent('''
    import sys, time, json, torch
    torch.set_num_threads(1)
    from cxr_fracture import train as T
    cfg, resume, slow = json.loads(sys.argv[1]), sys.argv[2] == '1', float(sys.argv[3])
    if slow:
        step = T._Run.train_step
        def slow_step(self, b): time.sleep(slow if self.stage == 2 else 0); return step(self, b)
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


@pytest.mark.parametrize('method,extra', [('dynamic', {}), ('temporal_ensemble', {}),
                                          ('mean_teacher', {'scheduler': 'plateau', 'plateau_patience': 0})])
def test_resume_after_sigkill_is_exact(phantom, tmp_path, method, extra):
    "Killed (SIGKILL) in the middle of the last stage-2 epoch and resumed: every checkpointed value equals an uninterrupted run's."
    script = tmp_path/'run.py'; script.write_text(SCRIPT)
    ref = tiny(phantom, tmp_path/'ref', method=method, epochs_stage1=1, epochs_stage2=2, limit_batches=3, checkpoint_every=1, **extra)
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
    if method == 'temporal_ensemble': assert bool((killed_at['method']['ensemble']['t'] > 0).any()) and float(killed_at['method']['zn'].sum()) > 0
    if method == 'dynamic': assert killed_at['method']['dynamic']['t'] is not None
    if extra: assert killed_at['scheduler']['last_epoch'] == 1 and 0 <= killed_at['scheduler']['best'] <= 1   # the plateau watched stage 2's first epoch
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
    "train(cfg), keeping a copy of every stage-2 checkpoint written: [(stage, epoch, step, path)]."
    import shutil
    kept, save = [], T._Run.save_checkpoint
    def keep(self):
        save(self)
        if self.stage != 2: return
        dst = Path(cfg['out'])/f'ck_{len(kept)}.pt'; shutil.copy(self.ckdir/'last.pt', dst)
        kept.append((self.stage, self.epoch, self.step, dst))
    monkeypatch.setattr(T._Run, 'save_checkpoint', keep)
    train(cfg)
    monkeypatch.setattr(T._Run, 'save_checkpoint', save)
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
    for k in ('model', 'optimizer', 'method'): _strict_equal(a[k], b[k], k)


DDP_SCRIPT = textwrap.dedent('''
    import sys, json, os, torch
    torch.set_num_threads(1)
    from cxr_fracture import train as T
    cfg = T.TrainConfig.from_dict(json.loads(sys.argv[1]))
    di = T.init_distributed(cfg.device)
    s1 = T._train_stage1(T.stage1_config(cfg), di)
    run = T._Run(cfg, di, stage=2, init=s1/'model.pt', stage1_log=s1/'metrics_log.jsonl'); run.run()
    torch.save({'model': run.model.state_dict(), 'method': run.M.state_dict()}, os.path.join(cfg.out, f'rank{di.rank}.pt'))
''')


@pytest.mark.parametrize('method', ['aals', 'dynamic'])
def test_ddp_gloo_two_processes_agree(phantom, tmp_path, method):
    "torchrun with 2 CPU processes (gloo): the students and the method states (EMA teacher, dynamic m) of both ranks end identical."
    script = tmp_path/'ddp.py'; script.write_text(DDP_SCRIPT)
    cfg = tiny(phantom, tmp_path/'ddp', method=method, batch_size=2, device='cpu', limit_batches=3)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        str(script), json.dumps(cfg)], env=ENV, timeout=200, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path/'ddp'/f'rank{k}.pt', weights_only=True) for k in (0, 1))
    _strict_equal(a['model'], b['model'], 'model'); _strict_equal(a['method'], b['method'], 'method')
    log = read_log(tmp_path/'ddp')
    assert (log['world_size'] == 2).all() and log['images'].tolist() == [12, 12]  # 3 steps x 2 ranks x 2 images, both stages


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


def test_holdout_split_is_the_dynamic_sharpening_papers(phantom):
    "split_scheme='holdout': a fixed, patient-level test set for every fold; val is fold k of the rest (80/20)."
    base = tiny(phantom, phantom/'x', split_scheme='holdout', holdout_test=0.25)
    splits = [load_data(TrainConfig(**{**base, 'fold': k}))[0] for k in range(5)]
    tests = [set(d.image_id[d.split == 'test']) for d in splits]
    assert all(t == tests[0] for t in tests) and 0 < len(tests[0]) < len(splits[0])        # the same hold-out set
    vals = [set(d.image_id[d.split == 'val']) for d in splits]
    assert all(v and not (v & tests[0]) for v in vals)
    rest = set(splits[0].image_id) - tests[0]
    assert set().union(*vals) == rest and sum(map(len, vals)) == len(rest)                 # five disjoint val folds
    pid = splits[0].set_index('image_id').patient_id
    assert not ({pid[i] for i in tests[0]} & {pid[i] for i in rest})                        # patient-level
