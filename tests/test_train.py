"""The two-stage trainer on a tiny phantom: every method end to end, exact resume after SIGKILL, DDP on gloo."""
import json, os, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest
import torch

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
        def slow_step(self, *a, **k): time.sleep(slow); return step(self, *a, **k)
        T._Run.train_step = slow_step
    T.train(cfg, resume=resume)
''')


def _all_tensors_equal(a, b, path='ck'):
    if torch.is_tensor(a): assert torch.equal(a, b), path; return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a: _all_tensors_equal(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)): _all_tensors_equal(x, y, f'{path}[{i}]')


@pytest.mark.parametrize('method,kill_after_log_lines', [('dynamic', 2), ('temporal_ensemble', 0)])
def test_resume_after_sigkill_is_exact(phantom, tmp_path, method, kill_after_log_lines):
    "A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run (CPU)."
    script = tmp_path/'run.py'; script.write_text(SCRIPT)
    ref = tiny(phantom, tmp_path/'ref', method=method, epochs_stage1=1, epochs_stage2=2, limit_batches=3, checkpoint_every=1)
    cut = {**ref, 'out': str(tmp_path/'cut')}
    subprocess.run([sys.executable, str(script), json.dumps(ref), '0', '0'], check=True, env=ENV, timeout=120)
    p = subprocess.Popen([sys.executable, str(script), json.dumps(cut), '0', '0.3'], env=ENV)
    ck, log = tmp_path/'cut'/'checkpoints'/'last.pt', tmp_path/'cut'/'metrics_log.jsonl'
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None:
        n = len(log.read_text().splitlines()) if log.is_file() else 0
        if ck.is_file() and n >= kill_after_log_lines: break
        time.sleep(0.05)
    assert p.poll() is None, 'the run ended before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()
    killed_at = torch.load(ck, weights_only=True)
    assert (killed_at['stage'], killed_at['epoch'], killed_at['step']) != (2, 2, 0)  # really interrupted
    subprocess.run([sys.executable, str(script), json.dumps(cut), '1', '0'], check=True, env=ENV, timeout=120)
    a, b = (torch.load(tmp_path/d/'checkpoints'/'last.pt', weights_only=True) for d in ('ref', 'cut'))
    for k in ('model', 'teacher', 'optimizer', 'scheduler', 'temporal', 'dynamic', 'global_step', 'best'):
        _all_tensors_equal(a[k], b[k], k)
    _all_tensors_equal(torch.load(tmp_path/'ref'/'model.pt', weights_only=True)['model'],
                       torch.load(tmp_path/'cut'/'model.pt', weights_only=True)['model'])
    la, lb = read_log(tmp_path/'ref'), read_log(tmp_path/'cut')
    assert la[['stage', 'epoch', 'loss', 'val_mean_auroc']].equals(lb[['stage', 'epoch', 'loss', 'val_mean_auroc']])


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
    _all_tensors_equal(a['teacher'], b['teacher'], 'teacher'); _all_tensors_equal(a['model'], b['model'], 'model')
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
