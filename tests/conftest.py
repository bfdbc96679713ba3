"""Shared pytest fixtures: where the real data lives, and a visible skip when it is absent."""
import os
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('CXR_FRACTURE_SHARED', REPO.parent / 'shared' / 'data'))


@pytest.fixture(scope='session')
def shared_data() -> Path:
    "`../shared/data` beside the checkout; tests that need it skip with a reason when it is absent."
    if not SHARED_DATA.is_dir():
        pytest.skip(f'real data not found at {SHARED_DATA} (a user clone has no ../shared; CI has it)')
    return SHARED_DATA


@pytest.fixture(scope='session')
def repo() -> Path:
    return REPO


# Module-scoped folders (tmp_path_factory) outlive each test; they go when their module's tests have all passed.
# With `tmp_path_retention_policy = "failed"` (pyproject.toml) for tmp_path, the suite's peak disk use is one module's.
_FAILED_MODULES: set = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed: _FAILED_MODULES.add(item.nodeid.split('::')[0])


@pytest.fixture(scope='module', autouse=True)
def _module_scratch(request, tmp_path_factory):
    import shutil
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid in _FAILED_MODULES: return      # kept for whoever reads the failure
    for p in set(base.iterdir()) - before: shutil.rmtree(p, ignore_errors=True)
