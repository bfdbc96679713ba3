"""Teachers: EMA against the naive formula, buffers, autograd; temporal ensembling; Pi-model; DDP consistency."""
import copy, io, os, socket
import pytest
import torch
from torch import nn
from cxr_fracture.teacher import (ema_update, ema_alpha, EMATeacher, unwrap, teacher_map, pi_model_target,
                                  TemporalEnsemble, all_gather_batch, logits_of)
from cxr_fracture.data import warp_map, affine_theta

torch.set_num_threads(1)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _perturb(m, scale=0.1):
    with torch.no_grad():
        for p in m.parameters(): p.add_(scale * torch.randn_like(p))
    m.train()(torch.randn(3, 1, 8, 8))  # moves BatchNorm statistics


def test_ema_equals_naive_formula_over_steps():
    s = _net(); t = copy.deepcopy(s)
    ref = {k: v.clone() for k, v in t.named_parameters()}
    for step in range(5):
        _perturb(s)
        ema_update(t, s, alpha=0.95)
        sp = dict(s.named_parameters())
        ref = {k: 0.95 * v + 0.05 * sp[k].detach() for k, v in ref.items()}
        for k, v in t.named_parameters(): torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6)


def test_ema_copies_buffers_and_builds_no_graph():
    s = _net(); t = copy.deepcopy(s); _perturb(s)
    out = s(torch.randn(2, 1, 8, 8)).sum()   # a live graph on the student
    ema_update(t, s, 0.999)
    for (k, a), (_, b) in zip(t.named_buffers(), s.named_buffers()): assert torch.equal(a, b), k
    assert all(p.grad_fn is None for p in t.parameters())
    out.backward()                            # student graph intact
    assert all(p.grad is None for p in t.parameters())
    assert all(p.grad is not None for p in s.parameters())


def test_ema_unwraps_dataparallel_and_rejects_other_architectures():
    s = _net(); t = copy.deepcopy(s); _perturb(s)
    ema_update(t, nn.DataParallel(s), 0.0)
    for a, b in zip(t.parameters(), s.parameters()): assert torch.equal(a, b)
    assert unwrap(nn.DataParallel(s)) is s
    with pytest.raises(ValueError, match='same architecture'): ema_update(nn.Linear(2, 2), s)


def test_warmup_schedule():
    assert ema_alpha(0) == 0 and ema_alpha(1) == 0.5 and ema_alpha(3) == 0.75
    assert ema_alpha(10_000, 0.999) == 0.999 and ema_alpha(0, 0.99, warmup=False) == 0.99
    s = nn.Linear(3, 2); ema = EMATeacher(nn.Linear(3, 2), warmup=True)
    ema.update(s)  # alpha_0 = 0: a copy of the student
    for a, b in zip(ema.module.parameters(), s.parameters()): assert torch.equal(a, b)


def test_ema_teacher_frozen_eval_and_checkpoint_roundtrip(tmp_path):
    s = _net(); ema = EMATeacher(s, alpha=0.9)
    assert not any(p.requires_grad for p in ema.parameters())
    ema.train(); assert not ema.training and not ema.module.training
    for _ in range(3): _perturb(s); ema.update(s)
    assert int(ema.step) == 3
    torch.save(ema.state_dict(), tmp_path / 't.pt')
    ema2 = EMATeacher(_net(1), alpha=0.9)
    ema2.load_state_dict(torch.load(tmp_path / 't.pt', weights_only=True))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(ema(x), ema2(x)) and int(ema2.step) == 3
    assert ema(x).grad_fn is None


def test_teacher_map_and_pi_model_target():
    net = _net().train()
    x = torch.rand(2, 1, 16, 16)
    th = torch.stack([affine_theta(5.), affine_theta(-3., flip=True)])
    with torch.no_grad(): exp = warp_map(torch.sigmoid(net.eval()(x)), th)
    torch.testing.assert_close(teacher_map(net, x, th), exp)
    net.train(); student_out = net(x)  # backward still pending
    rm = net[1].running_mean.clone(); nbt = net[1].num_batches_tracked.clone()
    x.requires_grad_(True)
    tgt = pi_model_target(net, x, th)
    student_out.sum().backward()       # the restore of BatchNorm buffers did not break the student's graph
    assert tgt.grad_fn is None and tgt.shape == (2, 2, 16, 16)
    assert torch.equal(net[1].running_mean, rm) and torch.equal(net[1].num_batches_tracked, nbt)
    pi_model_target(net, x, bn_update=True)
    assert not torch.equal(net[1].running_mean, rm)


def test_logits_of():
    t = torch.zeros(1)
    assert logits_of(t) is t and logits_of({'logits': t}) is t and logits_of((t, 1)) is t
    with pytest.raises(TypeError): logits_of(3)


def test_temporal_constant_input_is_corrected_after_one_step():
    for dtype, tol in ((torch.float32, 1e-6), (torch.float16, 1e-3)):
        te = TemporalEnsemble(4, (2, 3, 3), alpha=0.6, dtype=dtype)
        z = torch.rand(2, 2, 3, 3)
        te.update([0, 2], z)
        torch.testing.assert_close(te.targets([0, 2]), z, atol=tol, rtol=0)
        assert te.seen([0, 1, 2, 3]).tolist() == [True, False, True, False]
        assert te.targets([1]).abs().sum() == 0


def test_temporal_irregular_visits_and_repeats_match_naive():
    g = torch.Generator().manual_seed(0)
    te = TemporalEnsemble(7, (2,), alpha=0.6, dtype=torch.float32)
    Z = torch.zeros(7, 2); T = torch.zeros(7)
    for _ in range(30):
        idx = torch.randint(0, 7, (5,), generator=g); z = torch.rand(5, 2, generator=g)
        te.update(idx, z)
        for i, zi in zip(idx.tolist(), z): Z[i] = 0.6 * Z[i] + 0.4 * zi; T[i] += 1
    exp = torch.where(T[:, None] > 0, Z / (1 - 0.6 ** T[:, None]), torch.zeros(1))
    torch.testing.assert_close(te.targets(torch.arange(7)), exp, atol=1e-5, rtol=1e-5)
    assert torch.equal(te.t, T.long())


def test_temporal_state_dict_roundtrip_and_errors(tmp_path):
    te = TemporalEnsemble(5, (1, 4, 4)); te.update([1, 4], torch.rand(2, 1, 4, 4))
    torch.save(te.state_dict(), tmp_path / 'te.pt')
    te2 = TemporalEnsemble(5, (1, 4, 4)).load_state_dict(torch.load(tmp_path / 'te.pt', weights_only=True))
    assert torch.equal(te2.Z, te.Z) and torch.equal(te2.t, te.t)
    torch.testing.assert_close(te2.targets([1, 4]), te.targets([1, 4]))
    with pytest.raises(ValueError, match='same data set'): TemporalEnsemble(6, (1, 4, 4)).load_state_dict(te.state_dict())
    with pytest.raises(ValueError, match='expected'): te.update([0], torch.rand(1, 1, 3, 3))
    with pytest.raises(IndexError): te.update([5], torch.rand(1, 1, 4, 4))


def test_all_gather_without_distributed_is_identity():
    i, m = all_gather_batch(torch.tensor([3]), torch.ones(1, 2))
    assert i.tolist() == [3] and m.shape == (1, 2)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _ddp_worker(rank, world, port, outdir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
        ddp = nn.parallel.DistributedDataParallel(net)
        ema = EMATeacher(ddp, alpha=0.9)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        te = TemporalEnsemble(8, (2, 4, 4))
        g = torch.Generator().manual_seed(100 + rank)   # each rank its own data
        for step in range(3):
            x = torch.rand(2, 1, 4, 4, generator=g)
            idx = torch.tensor([rank * 2, rank * 2 + 1]) + 4 * (step % 2)
            out = ddp(x); out.mean().backward(); opt.step(); opt.zero_grad()
            ema.update(ddp)
            gi, gm = all_gather_batch(idx, torch.sigmoid(out.detach()))
            te.update(gi, gm)
        torch.save(dict(ema=ema.state_dict(), te=te.state_dict(), student=net.state_dict()), os.path.join(outdir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_keep_teachers_consistent(tmp_path):
    import torch.multiprocessing as mp
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method='fork')
    a, b = (torch.load(tmp_path / f'r{r}.pt', weights_only=True) for r in (0, 1))
    for k in a['ema']: assert torch.equal(a['ema'][k], b['ema'][k]), k   # incl. BatchNorm buffers (broadcast)
    assert not torch.equal(a['student']['1.running_mean'], b['student']['1.running_mean'])  # students' stats differ
    assert torch.equal(a['ema']['module.1.running_mean'], a['student']['1.running_mean'])    # teacher took rank 0's
    assert torch.equal(a['te']['Z'], b['te']['Z']) and torch.equal(a['te']['t'], b['te']['t'])
    assert a['te']['t'].tolist() == [2] * 4 + [1] * 4  # both ranks' samples updated on both ranks
