"""Training keeps freed tensor memory mapped (fusionrec.ctr._memory): set once on glibc, and
FUSIONREC_MALLOC_TUNING=0 leaves malloc as it is."""

import os
import platform
import subprocess
import sys

import pytest

CHECK = "from fusionrec.ctr._memory import keep_freed_memory as k; print(k(), k())"


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FUSIONREC_MALLOC_TUNING"}
    if env_value is not None:
        env["FUSIONREC_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_glibc_thresholds_are_set_once_and_can_be_turned_off():
    assert _run(None) == "True True"
    assert _run("0") == "False False"
