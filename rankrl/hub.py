"""Is the Hugging Face hub reachable? Asked once, in about a second, before anything waits on it.

Without network and without ``HF_HUB_OFFLINE=1``, ``transformers`` and ``datasets`` retry an unknown hub name
for tens of seconds before failing. One TCP connection attempt with a short timeout answers the question
first; when the hub is unreachable, rankrl loads from the local cache only (``local_files_only``) and fails
at once with a message that says so. huggingface_hub has no such probe, hence this module.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from urllib.parse import urlparse

TIMEOUT = 2.0


def offline_requested() -> bool:
    """Whether the user turned the hub off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on")
               for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = TIMEOUT) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``, default huggingface.co:443) opens within
    ``timeout`` seconds, name lookup included.

    The attempt runs in a daemon thread: a resolver without an answer blocks ``getaddrinfo`` for many
    seconds, and no socket timeout covers it.
    """
    if offline_requested():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="rankrl-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def unreachable_note() -> str:
    """How the error messages name the situation."""
    if offline_requested():
        return "the hub is offline (HF_HUB_OFFLINE=1)"
    return f"the Hugging Face hub is unreachable (no connection within {TIMEOUT:g} s)"
