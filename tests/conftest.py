"""Shared fixtures: a real local Ray runtime and the tiny Qwen2 checkpoint, both session-scoped.

Tests run on CPU with tiny models built in code; `-m gpu` / `-m slow` opt into the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("LONGCTX_CACHE_DIR", str(REPO / ".cache" / "longctx"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train gives a worker group 60 s to start; a loaded 2-core CI machine can need more.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


def pytest_report_header(config):
    return (
        "longctx: default run excludes -m gpu and -m slow; include them with PYTEST_ARGS='-m slow' (or gpu)"
    )


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray runtime with 2 CPUs (resources in tests are sized fractionally: two actors or trainer
    workers at 1 CPU each leave none for Ray Data's tasks, and the run hangs), bound to 127.0.0.1 like every
    stage's local runtime (`longctx_core.infra.runtime.ensure_ray`)."""
    import ray

    from longctx_core.infra.runtime import ensure_ray, shutdown_ray

    ensure_ray(local=True, num_cpus=2, include_dashboard=False, log_to_driver=True, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    shutdown_ray()  # as a stage ends its runtime: nothing of it outlives the session


@pytest.fixture(scope="session")
def tiny_config():
    from longctx_core.config import TinyModelConfig

    return TinyModelConfig()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_config) -> Path:
    """The default tiny Qwen2 checkpoint (tokenizer trained on the built-in corpus), built once and cached."""
    from longctx_core.model.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tiny_config)


@pytest.fixture(scope="session")
def shared_nq_file() -> Path:
    path = SHARED_DATA / "nq-open-oracle.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data for checks lives in ../shared/data)")
    return path


class PngFacts:
    """What a PNG shows, decoded (matplotlib.image.imread): its size, distinct colours, share of non-white
    pixels, and how many pixels are close to a given colour. `png_facts(path)` in the tests."""

    def __init__(self, path: Path) -> None:
        import matplotlib.image as mpimg
        import numpy as np

        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
        rgb = img[..., :3]
        self.rgb = (rgb * 255).round().astype(np.uint8) if rgb.dtype.kind == "f" else rgb.astype(np.uint8)
        self.height, self.width = self.rgb.shape[:2]
        self.colours = len(np.unique(self.rgb.reshape(-1, 3), axis=0))
        self.ink = float((self.rgb.min(axis=2) < 250).mean())  # not white (or nearly)

    def near(self, colour: str, tol: int = 12) -> int:
        """Pixels within `tol` (per channel) of `colour` ("#rrggbb")."""
        import numpy as np

        target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        return int((np.abs(self.rgb.astype(np.int16) - target).max(axis=2) <= tol).sum())

    def assert_drawn(self, width: int, height: int, min_colours: int = 8) -> PngFacts:
        """The PNG has the expected size and real content: not blank, not one flat colour, not all ink."""
        assert (self.width, self.height) == (width, height), (self.width, self.height)
        assert self.colours >= min_colours, f"only {self.colours} colours: blank or flat"
        assert 0.005 < self.ink < 0.9, f"non-white share {self.ink:.3f}"
        return self


@pytest.fixture
def png_facts():
    """PngFacts for a path: decode a PNG and check what it shows (size, colours, drawn pixels)."""
    return PngFacts
