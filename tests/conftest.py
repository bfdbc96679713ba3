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
