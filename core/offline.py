"""Keep every library off the network: the one place that sets the offline environment."""
from __future__ import annotations

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def use_offline_hub(env=None) -> None:
    """Tell huggingface_hub / transformers never to reach a model hub: every weight we use ships in
    a pip package or a user's file. Call before they are imported. A value the user set is kept.
    `env` is a mutable mapping (default os.environ), e.g. a child process's environment."""
    env = os.environ if env is None else env
    for name in OFFLINE_VARIABLES:
        env.setdefault(name, "1")
