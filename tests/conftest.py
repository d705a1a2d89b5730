import os
import sys
from pathlib import Path

import pytest

# transformers is a test dependency (the Qwen reference): it must never reach a model hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.sources import REALDATA  # noqa: E402
import tests.torchvision_cpu  # noqa: E402,F401  (transformers imports torchvision: see the module)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not (REALDATA / "split" / "train.list").is_file():
        pytest.skip(f"../shared/realdata is absent ({REALDATA}): the real-clip tests need the shared folder")
    return REALDATA


@pytest.fixture(scope="session")
def real_build(realdata, tmp_path_factory) -> Path:
    """The real hamilton clip built with 4 s clips (275 frames → 120 + 120 + 35)."""
    from shardgen.build.pipeline import build
    from shardgen.build.plan import BuildParams

    out = tmp_path_factory.mktemp("real_build")
    build(realdata, out, ["train"], BuildParams(clip_seconds=4.0), workers=1, progress=False)
    return out

# real loopback servers (Swift s3api, nginx) and the connection-cutting proxy, for every test file
pytest_plugins = ["tests.servers"]
