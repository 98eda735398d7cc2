"""Which devices the panel offers, found without blocking Slicer and without torch.

``nvidia-smi`` can take seconds to answer (a GPU waking up, a driver in trouble), so
it runs in a background thread started when the panel opens; until it answers the
list holds "Automatic" and "CPU", and the panel refreshes the list when it has.
Asking torch instead would cost Slicer a CUDA context and import torch into its process.
"""

import shutil
import subprocess
import threading
from typing import List, Optional, Tuple

Device = Tuple[str, str]  # (device for the job spec, label for the panel)
CPU_LABEL = "CPU (slow: 10-50x slower than a GPU)"


def query_gpus(timeout: float = 10.0) -> List[Device]:
    """Each CUDA GPU ``nvidia-smi`` lists, with its memory; empty without one (blocking)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout).stdout
        devices = []
        for line in out.strip().splitlines():
            index, name, memory = [p.strip() for p in line.split(",")[:3]]
            devices.append((f"cuda:{index}", f"GPU {index}: {name} ({float(memory) / 1024:.0f} GB)"))
        return devices
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def device_list(gpus: Optional[List[Device]]) -> List[Device]:
    """Automatic first, then the GPUs, then the CPU; ``None``: GPUs not known yet."""
    if gpus is None:
        auto = "Automatic (first GPU, else CPU; looking for GPUs…)"
    else:
        auto = "Automatic (first GPU, else CPU)" if gpus else "Automatic (CPU: no CUDA GPU found)"
    return [("auto", auto)] + list(gpus or []) + [("cpu", CPU_LABEL)]


class DeviceProbe:
    """``nvidia-smi`` in a daemon thread; ``devices()`` answers at once with what is known."""

    def __init__(self, timeout: float = 10.0):
        self._gpus: Optional[List[Device]] = None
        self._thread = threading.Thread(target=self._run, args=(timeout,), name="TransferSeg GPU query", daemon=True)
        self._thread.start()

    def _run(self, timeout: float) -> None:
        self._gpus = query_gpus(timeout)

    @property
    def ready(self) -> bool:
        return self._gpus is not None

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return self.ready

    def devices(self) -> List[Device]:
        return device_list(self._gpus)
