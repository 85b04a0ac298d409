"""Test-wide settings. They must be in place before torch, transformers or Qt load."""
import os

# Headless Qt: set before any QApplication can exist (pytest-qt creates one lazily).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never touch a model hub in tests: all weights come from pip packages or test fixtures.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# CI has 2 cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Error logs written by tests stay out of the user's own log folder.
if "SSJDN_LOG_DIR" not in os.environ:
    import tempfile
    os.environ["SSJDN_LOG_DIR"] = tempfile.mkdtemp(prefix="ssjdn-test-logs-")
# So do caches (exported text encoders; the app's indexes are per test, see desktop_fixtures).
if "SSJDN_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["SSJDN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssjdn-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny config: random weights, a few thousand parameters, fast on CPU."""
    from ssjdn.core.model.api import create_model
    torch.manual_seed(0)
    return create_model("tiny")


@pytest.fixture(scope="module")
def ucm_root(tmp_path_factory):
    """A tiny UCM-Captions folder (json + images), one per test module."""
    from caption_fixtures import write_ucm_json
    root = tmp_path_factory.mktemp("ucm")
    write_ucm_json(root, {"train": 10, "val": 4, "test": 4})
    return root
