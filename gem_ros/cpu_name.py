"""The CPU's name, for the doctor's report and every benchmark's header: speeds measured
here are only comparable on one CPU (AVX2, AVX-512 and AMX machines differ). No torch."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from Linux's /proc/cpuinfo ('AMD EPYC', 'Intel(R) Xeon(R) ...'),
    else what the platform module knows (often only the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
