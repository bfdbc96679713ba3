"""Data: box masks, letterbox and augmentation alignment, warp_map, the mixed sampler, the dataset (tiny PNGs, cache, phantom)."""
import json, warnings
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from cxr_fracture.data import (ROLES, ROLE_CODE, role_codes, box_masks, affine_theta, invert_theta, warp_map,
                               warp_points, Augment, FractureDataset, collate, MixedBatchSampler, show_batch)

torch.set_num_threads(1)


# ---------- box masks ----------
def test_box_masks_pixel_centre_rule_matches_brute_force():
    rng = np.random.default_rng(0)
    S, stride = 64, 4
    boxes = np.sort(rng.uniform(0, S, (10, 2, 2)), axis=1).transpose(0, 2, 1).reshape(10, 4)[:, [0, 2, 1, 3]]
    boxes = np.stack([np.minimum(boxes[:, 0], boxes[:, 1]), np.minimum(boxes[:, 2], boxes[:, 3]),
                      np.maximum(boxes[:, 0], boxes[:, 1]), np.maximum(boxes[:, 2], boxes[:, 3])], 1)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] > stride) & (boxes[:, 3] - boxes[:, 1] > stride)]
    cls = rng.integers(0, 2, len(boxes))
    m = box_masks(boxes, cls, 2, S, stride)
    ref = np.zeros((2, S // stride, S // stride))
    for (x1, y1, x2, y2), k in zip(boxes, cls):
        for i in range(S // stride):
            for j in range(S // stride):
                cx, cy = (j + .5) * stride, (i + .5) * stride
                if x1 <= cx < x2 and y1 <= cy < y2: ref[k, i, j] = 1
    assert np.array_equal(m.numpy(), ref)


def test_box_masks_tiny_box_keeps_its_cell_and_size_checks():
    m = box_masks([[9.2, 9.4, 9.8, 9.9]], [1], 2, 32, 8)
    assert m.sum() == 1 and m[1, 1, 1] == 1
    with pytest.raises(ValueError, match='multiple of the stride'): box_masks([], [], 1, 30, 4)


def test_role_codes():
    assert role_codes(list('RPNU')).tolist() == [0, 1, 2, 3] and ROLES[ROLE_CODE['P']] == 'P'
    with pytest.raises(ValueError, match='not one of'): role_codes(['Z'])


# ---------- affine maths ----------
def test_warp_map_identity_flip_rotation_and_inverse():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(warp_map(x, affine_theta()), x, atol=1e-6)
    assert torch.allclose(warp_map(x, affine_theta(flip=True)), x.flip(-1), atol=1e-6)
    assert torch.allclose(warp_map(x, affine_theta(-90.)), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    # smooth map: inverse warp brings it back inside the field of view
    yy, xx = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    p = torch.exp(-((xx - 14) ** 2 + (yy - 17) ** 2) / 40)[None, None]
    th = affine_theta(8., True, 1.05)[None]
    back = warp_map(warp_map(p, th), invert_theta(th))
    assert (back - p)[..., 6:26, 6:26].abs().max() < 0.05


def test_warp_map_downsample_then_affine_equals_map_of_augmented_image():
    """p' = f_Affi(DS(p)): the warped teacher map of the clean image ~ the map of the augmented image."""
    yy, xx = torch.meshgrid(torch.arange(128.), torch.arange(128.), indexing='ij')
    img = (torch.exp(-((xx - 40) ** 2 + (yy - 70) ** 2) / 200) + 0.6 * torch.exp(-((xx - 90) ** 2 + (yy - 30) ** 2) / 150))
    img = img[None, None].repeat(4, 1, 1, 1)
    aug = Augment(rotate=10, flip=0.5, gamma=None, contrast=None, brightness=0., scale=(0.9, 1.1), translate=0.05)
    r = aug(img, generator=torch.Generator().manual_seed(1))
    DS = lambda z: F.avg_pool2d(z, 4)
    err = (DS(r['image']) - warp_map(img, r['theta'], size=32)).abs().max()
    assert err < 0.05, err
    err2 = (DS(r['image']) - warp_map(DS(img), r['theta'])).abs().max()
    assert err2 < 0.05, err2


def test_warp_points_follows_the_image():
    S = 64; img = torch.zeros(1, 1, S, S); img[0, 0, 20:24, 40:44] = 1.   # a blob centred at (42, 22)
    th = affine_theta(9., True, 1.0, (0.05, -0.03))
    w = warp_map(img, th)[0, 0]
    yy, xx = torch.meshgrid(torch.arange(S) + .5, torch.arange(S) + .5, indexing='ij')
    com = torch.stack([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    torch.testing.assert_close(com, warp_points([[42., 22.]], th, S)[0], atol=0.15, rtol=0)


def _inside_convex(poly, x, y):
    """Points (x, y) inside the convex polygon `poly` (K, 2), any orientation."""
    sgn = []
    for k in range(len(poly)):
        (ax, ay), (bx, by) = poly[k], poly[(k + 1) % len(poly)]
        sgn.append((bx - ax) * (y - ay) - (by - ay) * (x - ax))
    sgn = np.stack(sgn)
    return (sgn >= 0).all(0) | (sgn <= 0).all(0)


def test_augmented_mask_equals_mask_of_augmented_box_region():
    S, stride = 128, 4; h = S // stride
    boxes = np.array([[30., 40., 70., 80.], [80., 20., 110., 44.]]); cls = np.array([0, 1])
    m = box_masks(boxes, cls, 2, S, stride)
    aug = Augment(rotate=10, flip=0.5, scale=(0.9, 1.1))
    g = torch.Generator().manual_seed(5)
    img = torch.rand(3, 1, S, S); masks = m[None].repeat(3, 1, 1, 1)
    r = aug(img, masks, generator=g)
    yy, xx = np.meshgrid((np.arange(h) + .5) * stride, (np.arange(h) + .5) * stride, indexing='ij')
    for b in range(3):
        for (x1, y1, x2, y2), k in zip(boxes, cls):
            poly = warp_points([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], r['theta'][b], S).numpy()
            ref = _inside_convex(poly, xx, yy)
            got = r['masks'][b, k].numpy() > 0.5
            diff = ref ^ got
            # disagreement only at the boundary: within one cell of the polygon's edge
            ring = (F.max_pool2d(torch.tensor(ref, dtype=torch.float)[None, None], 3, 1, 1)[0, 0].numpy() > 0) & \
                   ~(-F.max_pool2d(-torch.tensor(ref, dtype=torch.float)[None, None], 3, 1, 1)[0, 0].numpy() > 0)
            assert not (diff & ~ring).any(), (b, k)
            assert diff.sum() <= 0.15 * ref.sum(), (b, k, diff.sum(), ref.sum())


def test_augment_determinism_ranges_and_single_image():
    aug = Augment()
    x = torch.rand(4, 1, 32, 32); m = (torch.rand(4, 2, 8, 8) > 0.5).float()
    a = aug(x, m, generator=torch.Generator().manual_seed(0)); b = aug(x, m, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a['image'], b['image']) and torch.equal(a['theta'], b['theta']) and torch.equal(a['masks'], b['masks'])
    assert a['image'].min() >= 0 and a['image'].max() <= 1 and set(a['masks'].unique().tolist()) <= {0., 1.}
    one = aug(x[0], m[0], generator=torch.Generator().manual_seed(0))
    assert one['image'].shape == (1, 32, 32) and one['theta'].shape == (2, 3) and one['masks'].shape == (2, 8, 8)
    ints = Augment(spatial=False)(x, m, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ints['masks'], m) and torch.allclose(ints['theta'], affine_theta().expand(4, 2, 3))
    # the two halves of the parameters: sample once, apply to image and to a teacher's map alike
    p = aug.sample(4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(aug.apply(x, p, m)['masks'], (warp_map(m, p['theta']) >= 0.5).float())


# ---------- sampler ----------
ROLES_TOY = ['N'] * 30 + ['R'] * 5 + ['P'] * 9 + ['U'] * 3


def test_sampler_ratio_pass_and_determinism():
    s = MixedBatchSampler(ROLES_TOY, batch_size=8, p_fraction=0.25, seed=1)
    assert (s.n_supervised, s.n_distilled) == (6, 2)
    bs = list(s)
    assert len(bs) == len(s) == 6 and all(len(b) == 8 for b in bs)
    assert all(ROLES_TOY[i] in 'RN' for b in bs for i in b[:6]) and all(ROLES_TOY[i] == 'P' for b in bs for i in b[6:])
    assert {i for b in bs for i in b[:6]} == set(range(35))        # one pass over R∪N (padded)
    assert not any(ROLES_TOY[i] == 'U' for b in bs for i in b)
    assert list(MixedBatchSampler(ROLES_TOY, 8, 0.25, seed=1)) == bs
    assert list(MixedBatchSampler(ROLES_TOY, 8, 0.25, seed=2)) != bs
    s.set_epoch(1); assert list(s) != bs
    s0 = MixedBatchSampler(ROLES_TOY, 8, 0.0)
    assert s0.n_distilled == 0 and all(ROLES_TOY[i] in 'RN' for b in s0 for i in b)


def _prefetching(it, ahead=3):
    """Like a DataLoader with workers: pulls `ahead` batches from the sampler before they are consumed."""
    buf = []
    for b in it:
        buf.append(b)
        if len(buf) > ahead: yield buf.pop(0)
    yield from buf


def test_sampler_resume_in_the_middle_is_exact_with_a_prefetching_loader():
    def run(stop=None, sd=None, epochs=3):
        s = MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=7)
        if sd is not None: s.load_state_dict(sd)
        seen = []
        for epoch in range(s.epoch, epochs):
            s.set_epoch(epoch)
            consumed = s.position if s.position < len(s) else 0
            for b in _prefetching(iter(s)):
                seen.append((epoch, b)); consumed += 1
                if stop is not None and len(seen) == stop:
                    assert s.position > consumed                      # the sampler ran ahead
                    return seen, s.state_dict(position=consumed)
        return seen, None
    full, _ = run()
    first, sd = run(stop=25)
    assert sd['epoch'] == 1 and 0 < sd['position'] < 18
    rest, _ = run(sd=sd)
    assert first + rest == full
    # a DataLoader over the resumed sampler yields the same remaining batches
    s = MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=7).load_state_dict(sd); s.set_epoch(1)
    dl = torch.utils.data.DataLoader(list(range(len(ROLES_TOY))), batch_sampler=s, collate_fn=list)
    assert list(dl) == [b for e, b in rest if e == 1]


def test_sampler_state_rejects_other_settings():
    sd = MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=7).state_dict()
    with pytest.raises(ValueError, match='same data'): MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=8).load_state_dict(sd)
    with pytest.raises(ValueError, match='number of processes'): MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=7, rank=0, world_size=2).load_state_dict(sd)


def test_sampler_ddp_shards_disjoint_and_covering():
    W = 3
    ss = [MixedBatchSampler(ROLES_TOY, 4, 0.5, seed=0, rank=r, world_size=W) for r in range(W)]
    per = [list(s) for s in ss]
    assert len({len(p) for p in per}) == 1
    for k in range(len(per[0])):
        glob = [i for r in range(W) for i in per[r][k]]
        assert len(set(glob)) == len(glob)                            # disjoint within a global batch
    sup = [i for r in range(W) for b in per[r] for i in b[:2]]
    assert set(sup) == {i for i, r in enumerate(ROLES_TOY) if r in 'RN'}  # together they cover R∪N
    assert len(sup) - len(set(sup)) < W * 2                           # only the last batch is padded
    dis = [i for r in range(W) for b in per[r] for i in b[2:]]
    assert len(dis) == 6 * len(per[0]) and set(dis) == {i for i, r in enumerate(ROLES_TOY) if r == 'P'}
    assert np.array_equal(ss[0].global_batches()[:, 1], np.array(per[1]))


def test_sampler_balanced_positives_and_errors():
    pos = np.array([r == 'R' for r in ROLES_TOY])
    s = MixedBatchSampler(ROLES_TOY, 8, 0.25, positives=pos, pos_fraction=0.5)
    for b in s: assert sum(pos[i] for i in b[:6]) == 3
    with pytest.raises(ValueError, match='P images'): MixedBatchSampler(['R', 'N'], 2, 0.5)
    with pytest.raises(ValueError, match='positives='): MixedBatchSampler(ROLES_TOY, 4, 0.5, pos_fraction=0.5)


# ---------- dataset ----------
def _tiny(root, n=12, h=100, w=80, seed=0):
    rng = np.random.default_rng(seed); rows = []
    for i in range(n):
        img = (rng.random((h, w)) * 60 + 40).astype(np.uint8)
        role = 'RPN'[i % 3] if i < 9 else 'N'; boxes = []
        if role in 'RP':
            x1, y1 = int(rng.integers(5, w - 35)), int(rng.integers(5, h - 35))
            boxes = [dict(x1=x1, y1=y1, x2=x1 + 30, y2=y1 + 24, label='rib_fracture')]
            img[y1:y1 + 24, x1:x1 + 30] = 230
        Image.fromarray(img).save(root / f'im{i}.png')
        rows.append(dict(image_id=f'im{i}', path=f'im{i}.png', patient_id=f'p{i}', role=role,
                         rib_fracture=1 if boxes else 0, clavicle_fracture=0 if role != 'P' else (-1 if i == 4 else None),
                         boxes=json.dumps(boxes), split='train' if i < 10 else 'val'))
    return pd.DataFrame(rows)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny'); df = _tiny(root)
    df.to_csv(root / 'manifest.csv', index=False)
    return root, df


def test_dataset_items_labels_roles_and_has_mask(tiny):
    root, df = tiny
    ds = FractureDataset(root / 'manifest.csv', root=root, size=64, stride=4)
    assert len(ds) == 10 and ds.classes == ('rib_fracture', 'clavicle_fracture')   # split='train'
    it = ds[0]
    assert it['image'].shape == (1, 64, 64) and it['image'].dtype == torch.float32
    assert it['masks'].shape == (2, 16, 16) and it['role'] == ROLE_CODE['R'] and it['index'] == 0
    assert it['has_mask'].tolist() == [True, True] and it['labels'].tolist() == [1., 0.]
    assert it['boxes'].shape == (1, 4) and it['box_classes'].tolist() == [0]
    p = ds[1]; assert p['role'] == ROLE_CODE['P'] and p['has_mask'].tolist() == [False, False]
    assert torch.isnan(p['labels'][1]) and ds[4]['labels'][1] == -1          # unknown vs uncertain
    n = ds[2]; assert n['has_mask'].tolist() == [True, True] and n['masks'].sum() == 0
    assert ds.positives.sum() == 6 and 'R=3' in repr(ds)
    assert torch.equal(it['theta'], affine_theta()) and 'image_orig' not in it


def test_masks_line_up_with_boxes_after_letterbox(tiny):
    root, df = tiny
    from cxr_fracture.io import transform_boxes
    ds = FractureDataset(df, root=root, size=64, stride=4)
    for i in (0, 3, 6):
        it = ds[i]
        b = json.loads(df.boxes[i])[0]
        tr = dict(scale=64 / 100, pad_top=0., pad_left=10 * 64 / 100)   # 100x80 padded to 100x100
        bc = transform_boxes([[b['x1'], b['y1'], b['x2'], b['y2']]], tr)
        torch.testing.assert_close(it['boxes'], torch.tensor(bc, dtype=torch.float32))
        assert torch.equal(it['masks'], box_masks(bc, [0], 2, 64, 4))
        c = it['image'][0, 2::4, 2::4]; m = it['masks'][0].bool()
        assert c[m].min() > 0.6 and c[~m].max() < 0.45                    # the mask is the bright square


def test_dataset_cache_augment_collate_and_exclusions(tiny, tmp_path):
    root, df = tiny
    from cxr_fracture.io import build_cache
    bad = pd.concat([df, pd.DataFrame([dict(df.iloc[0]) | dict(image_id='gone', path='missing.png')])], ignore_index=True)
    build_cache(bad, root, tmp_path / 'c', size=64, workers=1, progress=False)
    with pytest.warns(UserWarning, match='1 image'):
        ds = FractureDataset(bad, cache=tmp_path / 'c', stride=4, augment=Augment(), seed=0)
    assert ds.excluded.image_id.tolist() == ['gone'] and 'unreadable' in ds.excluded.reason[0]
    fly = FractureDataset(df, root=root, size=64, stride=4)
    torch.testing.assert_close(ds[0]['image_orig'], fly[0]['image'], atol=0.01, rtol=0)
    a, b = ds[3], ds[3]
    assert torch.equal(a['image'], b['image'])                        # per (seed, epoch, index)
    ds.set_epoch(1); assert not torch.equal(ds[3]['theta'], a['theta'])
    s = MixedBatchSampler(ds.roles, 6, 1 / 3, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_sampler=s, collate_fn=collate)))
    assert batch['image'].shape == (6, 1, 64, 64) and batch['theta'].shape == (6, 2, 3)
    assert isinstance(batch['boxes'], list) and len(batch['boxes']) == 6 and isinstance(batch['image_id'][0], str)
    assert (batch['role'] == ROLE_CODE['P']).sum() == 2
    with pytest.raises(ValueError, match='size=32'): FractureDataset(df, cache=tmp_path / 'c', size=32)
    import pickle
    blob = pickle.dumps(ds); assert len(blob) < 64 * 64 * len(ds)     # workers reopen the memmap, no copy
    ds2 = pickle.loads(blob); assert torch.equal(ds2[2]['image_orig'], ds[2]['image_orig'])


def test_dataset_errors(tiny):
    root, df = tiny
    with pytest.raises(ValueError, match='give size='): FractureDataset(df, root=root)
    with pytest.raises(ValueError, match="no 'split' column"): FractureDataset(df.drop(columns='split'), root=root, size=64)
    with pytest.raises(ValueError, match='lacks the column'): FractureDataset(df, root=root, size=64, classes=('fracture',))
    assert len(FractureDataset(df.drop(columns='split'), root=root, size=64, split=None)) == 12


def test_show_batch_returns_a_figure(tiny):
    import matplotlib; matplotlib.use('Agg')
    from matplotlib.figure import Figure
    root, df = tiny
    ds = FractureDataset(df, root=root, size=64, stride=4, augment=Augment())
    fig = show_batch(collate([ds[i] for i in range(4)]), classes=ds.classes)
    assert isinstance(fig, Figure) and len(fig.axes) == 4


def test_dataset_on_a_tiny_phantom(tmp_path):
    from cxr_fracture import phantom
    from cxr_fracture.io import build_cache, transform_boxes
    from cxr_fracture.manifest import boxes_array
    df = phantom.make_phantom(12, size=128, seed=0, out=tmp_path, positive_rate=0.5, r_fraction=0.5)
    ds = FractureDataset(tmp_path / 'manifest.csv', root=tmp_path, size=64, stride=4, split=None)
    assert len(ds) == 12 and set(ds.roles) <= {0, 1, 2}
    build_cache(tmp_path / 'manifest.csv', tmp_path, tmp_path / 'cache', size=64, workers=1, progress=False)
    cds = FractureDataset(tmp_path / 'manifest.csv', cache=tmp_path / 'cache', stride=4, split=None, augment=Augment())
    for i in range(12):
        it, row = ds[i], df.iloc[i]
        for k, c in enumerate(ds.classes):
            b = boxes_array(row, c)
            exp = box_masks(transform_boxes(b, dict(scale=0.5, pad_top=0, pad_left=0)), [0] * len(b), 1, 64, 4)[0]
            assert torch.equal(it['masks'][k], exp), (i, c)
            assert bool(it['has_mask'][k]) == (row.role in 'RN' and (len(b) > 0 or row[c] == 0))
        torch.testing.assert_close(cds[i]['image_orig'], it['image'], atol=0.01, rtol=0)
    s = MixedBatchSampler(cds.roles, 4, 0.25, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(cds, batch_sampler=s, collate_fn=collate)))
    assert batch['masks'].shape == (4, 2, 16, 16) and (batch['role'][3:] == ROLE_CODE['P']).all()
