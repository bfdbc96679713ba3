"""The notebooks as a reader meets them: JupyterLab in headless Chromium, Run All, then look.

For each tutorial notebook with figures or widgets (`notebook_cells.tutorial_notebooks`: a cell calls a figure
function of the package), a copy with its outputs cleared is opened in a real JupyterLab (127.0.0.1, a random free
port, a token) in Debian's Chromium driven by Playwright, and every cell is run (those nbdev_test skips, `#| slow`, `#| gpu`, `#| eval: false`, are blanked in the copy). Then: no cell has an error output;
every figure cell shows an image (a PNG in the cell's outputs, and an <img> the browser has drawn); and on the
sharpening explorer (06_sharpen), moving each slider with the keyboard changes the picture drawn under it.

Skips, saying why, when Chromium (`apt-get install chromium`) or Playwright (`pip install playwright`; its own
browser download is not used) is absent; fails instead where `CXR_BROWSER_REQUIRED=1` (CI, `.ci/run`). `CXR_BROWSER_SHOTS=DIR` keeps a screenshot of each notebook there.
`CXR_BROWSER_NOTEBOOKS=06_sharpen.ipynb,...` runs only those; `CXR_BROWSER_ALL=1` adds those in TOO_SLOW."""
import json, os, shutil, socket, subprocess, sys, secrets, time, urllib.request
from pathlib import Path
import pytest
from notebook_cells import NBS, figure_cells, figure_functions, tutorial_notebooks, never_run_in_tests

CHROMIUM = os.environ.get('CXR_CHROMIUM', shutil.which('chromium') or '/usr/bin/chromium')
RUN_TIMEOUT = 600            # seconds for one notebook's Run All
EXPLORER = '06_sharpen.ipynb'
SHOTS = os.environ.get('CXR_BROWSER_SHOTS')


# left out unless CXR_BROWSER_ALL=1, to keep the test to a few minutes on a 2-core machine
TOO_SLOW = {'08c_baselines.ipynb': 'trains the six baselines (about 4 min on 2 cores); its one figure, show_cam, is '
                                   'made and shown as 05a_detectors shows it'}


def _notebooks():
    only = [s for s in os.environ.get('CXR_BROWSER_NOTEBOOKS', '').split(',') if s]
    nbs = [p for p in tutorial_notebooks() if os.environ.get('CXR_BROWSER_ALL') or p.name not in TOO_SLOW]
    return [p for p in nbs if not only or p.name in only]


def _skip(why):
    "Skip, saying why; in CI (`CXR_BROWSER_REQUIRED=1`, set by .ci/run) fail instead."
    if os.environ.get('CXR_BROWSER_REQUIRED'): pytest.fail(why + ' (CXR_BROWSER_REQUIRED is set: CI must run this test)')
    pytest.skip(why)


@pytest.fixture(scope='module')
def browser():
    if not Path(CHROMIUM).exists():
        _skip(f'Chromium not found at {CHROMIUM}: apt-get install chromium (or set CXR_CHROMIUM) to run the browser test')
    try: from playwright import sync_api
    except ImportError: _skip('playwright not installed: pip install playwright (its own browser download is not needed)')
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 serving copies of the tutorial notebooks, outputs cleared (the files in nbs/ are not touched)."
    root = tmp_path_factory.mktemp('lab')
    for p in _notebooks():
        nb = json.loads(p.read_text())
        for c in nb['cells']:
            if c['cell_type'] == 'code':
                c['outputs'], c['execution_count'] = [], None
                if never_run_in_tests(''.join(c['source'])): c['source'] = ['pass  # skipped as nbdev_test skips it']
        nb['metadata'].pop('widgets', None)
        (root / p.name).write_text(json.dumps(nb))
    settings = root / '.settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)                       # no news or update pop-ups over the notebook
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}   # the kernel's default backend, as on a reader's machine
    env = {**env, 'JUPYTERLAB_SETTINGS_DIR': str(root / '.settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(root / '.ws'),
           'JUPYTER_RUNTIME_DIR': str(root / '.runtime'), 'PYTHONUNBUFFERED': '1'}
    log = open(root / 'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
                             '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
                             '--LabApp.expose_app_in_browser=True', '--ServerApp.open_browser=False']
                            + (['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else []),
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            if proc.poll() is not None: break
            try:
                urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
            except OSError: time.sleep(0.5)
        else: proc.poll()
        if proc.returncode is not None:
            pytest.fail(f'JupyterLab did not start (exit {proc.returncode}):\n' + (root / 'lab.log').read_text()[-3000:])
        yield dict(url=url, token=token, root=root)
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


# The notebook as the browser holds it: per cell, its type, source, execution count and outputs (types and mime types).
CELLS_JS = '''() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return nb.widgets.map(w => { const m = w.model; const o = m.type === 'code' ? m.outputs.toJSON() : [];
    return {type: m.type, source: m.sharedModel.getSource(), count: m.type === 'code' ? m.executionCount : null,
            outputs: o.map(x => ({type: x.output_type, mimes: Object.keys(x.data || {}), ename: x.ename || '', evalue: x.evalue || '',
                                   text: (x.text || '').toString().slice(0, 300)}))}; });
}'''
# per cell: the <img> elements drawn in its output area, as (natural width, src length)
IMGS_JS = '''() => window.jupyterapp.shell.currentWidget.content.widgets.map(w =>
  Array.from(w.node.querySelectorAll('.jp-OutputArea img')).map(i => [i.naturalWidth, i.complete, (i.src || '').length]))'''
STATE_JS = '''() => { const p = window.jupyterapp.shell.currentWidget; const k = p.sessionContext.session && p.sessionContext.session.kernel;
  const busy = p.content.widgets.filter(w => w.model.type === 'code' && w.node.querySelector('.jp-InputPrompt')
                                               && w.node.querySelector('.jp-InputPrompt').textContent.includes('*')).length;
  return {kernel: k ? k.status : 'none', busy: busy}; }'''


def _open(page, lab, name):
    # a workspace of its own, reset: only this notebook open, and it is the current widget
    page.goto(f"{lab['url']}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={lab['token']}", wait_until='domcontentloaded')
    page.wait_for_function('(n) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;'
                           '         return w && w.context && w.context.path === n && w.content && w.content.widgets.length > 0; }',
                           arg=name, timeout=120_000)
    page.wait_for_function('''() => { const s = window.jupyterapp.shell.currentWidget.sessionContext;
                                      return s.session && s.session.kernel && s.session.kernel.status === 'idle'; }''', timeout=180_000)


def _run_all(page):
    t0 = time.time()
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")   # not awaited: polled below
    page.wait_for_timeout(1000)
    idle_since = None
    while time.time() - t0 < RUN_TIMEOUT:
        st = page.evaluate(STATE_JS)
        if st['kernel'] == 'idle' and st['busy'] == 0:
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 2: return time.time() - t0
        else: idle_since = None
        page.wait_for_timeout(500)
    raise AssertionError(f'Run All did not finish within {RUN_TIMEOUT} s')


def _wait_idle(page, timeout=60):
    t0, idle_since = time.time(), None
    while time.time() - t0 < timeout:
        if page.evaluate(STATE_JS)['kernel'] == 'idle':
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 1: return
        else: idle_since = None
        page.wait_for_timeout(200)


def _explorer_png(page):
    "The explorer picture's src: a blob URL, new whenever the widget's PNG changes."
    return page.evaluate('''() => { const i = document.querySelector('.jp-OutputArea .widget-image');
        if (!i) return null; return i.src; }''')


def _check_sliders(page, name, shots):
    sliders = page.locator('.jp-OutputArea .widget-slider')
    n = sliders.count()
    assert n == 5, f'{name}: the explorer shows {n} sliders, expected 5'
    assert page.locator('.jp-OutputArea .widget-image').count() >= 1, f'{name}: the explorer draws no picture (no image widget)'
    page.locator('.jp-OutputArea .widget-image').first.scroll_into_view_if_needed()
    for k in range(n):
        before = _explorer_png(page)
        handle = sliders.nth(k).locator('.noUi-handle')
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(3): page.keyboard.press('ArrowRight')    # 0.03 up: each key press is one change, one redraw
        try:
            page.wait_for_function('(b) => { const i = document.querySelector(".jp-OutputArea .widget-image"); return i && i.src !== b && i.complete && i.naturalWidth > 0; }',
                                   arg=before, timeout=30_000)
        except Exception:
            raise AssertionError(f'{name}: moving slider {k} (' + sliders.nth(k).inner_text() + ') did not change the drawn picture')
        _wait_idle(page)                                        # the three redraws done before the next slider
        if shots and k == 0: page.screenshot(path=str(Path(shots) / f'{Path(name).stem}_slider.png'), full_page=False)


NOTEBOOKS = _notebooks()


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(browser, lab, nb):
    names = figure_functions()
    fig_cells = {i for i, _ in figure_cells(nb, names)}
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    try:
        _open(page, lab, nb.name)
        secs = _run_all(page)
        cells = page.evaluate(CELLS_JS)
        imgs = page.evaluate(IMGS_JS)
        errors = [(i, o['ename'], o['evalue']) for i, c in enumerate(cells) for o in c['outputs'] if o['type'] == 'error']
        assert not errors, f'{nb.name}: error outputs in cells ' + '; '.join(f'[{i}] {e}: {v}' for i, e, v in errors)
        not_run = [i for i, c in enumerate(cells) if c['type'] == 'code' and c['source'].strip() and c['count'] is None]
        assert not not_run, f'{nb.name}: cells {not_run} did not run'
        assert len(cells) == len(json.loads(nb.read_text())['cells'])
        missing = []
        for i in sorted(fig_cells):
            has_png = any('image/png' in o['mimes'] or 'application/vnd.jupyter.widget-view+json' in o['mimes'] for o in cells[i]['outputs'])
            drawn = any(w > 0 and ok for w, ok, _ in imgs[i])
            if not (has_png and drawn):
                first = cells[i]['source'].strip().splitlines()[0][:80]
                shown = [o['mimes'] or o['type'] for o in cells[i]['outputs']]
                missing.append(f'[{i}] {first!r}: outputs {shown}, images drawn {imgs[i]}')
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            for i in sorted(fig_cells)[:3]:
                page.evaluate(f'() => window.jupyterapp.shell.currentWidget.content.widgets[{i}].node.scrollIntoView()')
                page.wait_for_timeout(300)
                page.screenshot(path=str(Path(SHOTS) / f'{nb.stem}_cell{i}.png'))
        assert not missing, f'{nb.name}: figure cells that show no image:\n' + '\n'.join(missing)
        if nb.name == EXPLORER: _check_sliders(page, nb.name, SHOTS)
        print(f'{nb.name}: Run All {secs:.0f} s, {len(fig_cells)} figure cells drawn')
    finally:
        try: page.evaluate('() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()')   # its kernel ends here
        except Exception: pass
        page.close()
