"""`make notebooks`: re-execute tutorial notebooks in place, so that their figure and table cells carry outputs that
match the code, then `nbdev_clean` them.

    .venv/bin/python tools/run_notebooks.py nbs/06_sharpen.ipynb nbs/03_phantom.ipynb
    make notebooks NOTEBOOKS="nbs/06_sharpen.ipynb"        # default: every nbs/*.ipynb (not the papermill templates)

What a committed output may hold, and how this keeps to it:

* the same bytes on every machine and every run: the kernel starts with fixed seeds (python, numpy, torch) and
  `PYTHONHASHSEED=0`, one thread for torch, no progress bars (`TQDM_DISABLE=1`); figures are PNGs without
  matplotlib's version (`cxr_fracture.figures`);
* no execution counts and no cell metadata but tags (`nbdev_clean`, run on each file afterwards), and the
  notebook's own metadata as it was (not the executing machine's `language_info`);
* no widget models: a widget output keeps only its still (the sharpening explorer draws one, `image/png`); a
  widget with no still (a progress bar) is dropped. Live widgets need a kernel anyway; the still shows everywhere;
* no absolute paths or user names: the repository's folder, the virtual environment's, the home folder and
  temporary folders are replaced by placeholders; anything left that looks like one is reported and fails the run;
* cells nbdev_test skips (`#| slow`, `#| gpu`, `#| eval: false`) are not run, and keep no output.

A notebook that raises stops its own run (its file is left as it was) and the others go on; the exit status is 1
if any failed. `tests/test_notebook_outputs.py` checks the committed notebooks against these rules."""
import argparse, copy, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))
from notebook_cells import never_run_in_tests  # noqa: E402

SKIP_TAG = 'skip-execution'            # nbclient's tag for cells it must not run
SETUP = '''import os, random, numpy as np
random.seed(0); np.random.seed(0)
try:
    import torch; torch.manual_seed(0); torch.set_num_threads(1)
except ImportError: pass'''
WIDGET = 'application/vnd.jupyter.widget-view+json'
# what an absolute path looks like in an output, once the known folders are replaced
ABSOLUTE = re.compile(r'(?<![\w.~])(/(home|root|work|tmp|Users|private|var/folders|opt|usr|mnt|scratch)/[^\s\'"]+|[A-Za-z]:\\\\[^\s\'"]+)')


def _placeholders() -> list:
    "(absolute prefix, placeholder) pairs, longest first."
    shared = REPO.parent / 'shared'   # the real data beside the clone, as the notebooks reach it
    pairs = [(str(shared), '../shared'), (os.path.realpath(shared), '../shared'),
             (str(REPO) + '/', ''), (str(REPO), '.'), (sys.prefix, '.venv'), (str(Path.home()), '~'),
             (os.path.realpath(tempfile.gettempdir()), '/tmp'), (tempfile.gettempdir(), '/tmp')]
    return sorted({p for p in pairs if p[0] not in ('', '/')}, key=lambda p: -len(p[0]))


TMPNAME = re.compile(r'/tmp/(tmp|pytest-of-)[\w.-]+')


def scrub(text: str) -> str:
    "An output text without this machine's folders: known prefixes replaced, temporary folder names made fixed."
    for a, b in _placeholders(): text = text.replace(a, b)
    return TMPNAME.sub('TMP', text)   # a temporary folder: the same fixed, non-absolute name on every machine


def _texts(out: dict):
    "(container, key) of every text field of one output."
    if 'text' in out: yield out, 'text'
    for k, v in out.get('data', {}).items():
        if k.startswith('text/') or k in ('application/json',): yield out['data'], k


def clean_outputs(cell: dict) -> list:
    "The cell's outputs as committed: no widget models, no machine-specific text; returns what still looks absolute."
    kept, left = [], []
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if WIDGET in data:
            data.pop(WIDGET)
            if not any(k.startswith('image/') for k in data): continue   # a progress bar or other widget with no still
        for box, k in _texts(o):
            v = box[k]
            v = scrub(''.join(v) if isinstance(v, list) else v) if isinstance(v, (str, list)) else v
            box[k] = v
            if isinstance(v, str): left += [m.group(0) for m in ABSOLUTE.finditer(v)]
        kept.append(o)
    cell['outputs'] = kept
    return left


def run_notebook(path: Path, timeout: int = 1200) -> dict:
    "Execute one notebook in place (in its own folder, as JupyterLab would); returns what happened."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    meta = copy.deepcopy(nb.metadata)
    skipped = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == 'code' and never_run_in_tests(c.source):
            c.metadata.setdefault('tags', []).append(SKIP_TAG); c.outputs = []; skipped.append(i)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP))
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                            store_widget_state=False, skip_cells_with_tag=SKIP_TAG,
                            extra_arguments=['--IPKernelApp.log_level=ERROR'])   # no "running over TCP without encryption"
    t0 = time.time()
    client.execute()
    nb.cells.pop(0)
    left = {}
    for i, c in enumerate(nb.cells):
        if SKIP_TAG in c.metadata.get('tags', []):
            c.metadata['tags'].remove(SKIP_TAG)
            if not c.metadata['tags']: del c.metadata['tags']
        if c.cell_type == 'code':
            found = clean_outputs(c)
            if found: left[i] = sorted(set(found))
    nb.metadata = meta
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(path)], check=True, cwd=REPO)
    return dict(seconds=time.time() - t0, skipped=skipped, absolute=left)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    ap.add_argument('--timeout', type=int, default=1200, help='seconds one cell may take (default 1200)')
    args = ap.parse_args(argv)
    nbs = [Path(p) for p in args.notebooks] or sorted((REPO / 'nbs').glob('*.ipynb'))
    os.environ.update(PYTHONHASHSEED='0', TQDM_DISABLE='1', OMP_NUM_THREADS='1')
    os.environ.pop('MPLBACKEND', None)           # the kernel's own default, as in a reader's JupyterLab
    failed = []
    for p in nbs:
        print(f'{p}: running ...', flush=True)
        try: r = run_notebook(p.resolve(), args.timeout)
        except Exception as e:                   # this notebook stops; the others go on
            msg = str(e).strip().splitlines()
            print(f'{p}: FAILED, left as it was: ' + (msg[-1] if msg else type(e).__name__), flush=True)
            failed.append(str(p)); continue
        print(f"{p}: {r['seconds']:.0f} s" + (f", not run (slow/gpu/eval: false): cells {r['skipped']}" if r['skipped'] else ''), flush=True)
        for i, paths in r['absolute'].items():
            print(f'{p}: cell {i} still shows absolute paths: {paths}', flush=True); failed.append(f'{p} (cell {i})')
    size = sum(f.stat().st_size for f in (REPO / 'nbs').rglob('*') if f.is_file())
    print(f'nbs/ is {size / 2**20:.1f} MB' + (' (over the 10 MB limit)' if size > 10 * 2**20 else ''))
    if failed: print('failed: ' + ', '.join(failed))
    return 1 if failed or size > 10 * 2**20 else 0


if __name__ == '__main__':
    sys.exit(main())
