import os
import sys
from pathlib import Path

from hypothesis import settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # tests/kubelet.py and tests/paths.py are importable helpers

# The same examples on every run (CI and a developer's machine alike): a property test that fails
# fails every time. Explore more with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("explore", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
