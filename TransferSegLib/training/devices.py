"""Which device a run uses, and how it is described in events and model cards.

``auto`` means the first CUDA GPU when PyTorch sees one, else the CPU; a GPU asked
for by name that is not there is an error that says how to get one, never a
silent fall-back to a CPU run that would take hours.
"""

from typing import Any, Dict

import torch

from TransferSegLib.errors import TransferSegError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TransferSegError(
                f"Device '{name}' was asked for but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu, "
                f"or install a CUDA build of PyTorch (in Slicer: the PyTorch extension)."
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise TransferSegError(f"GPU {index} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
        return torch.device(f"cuda:{index}")
    if name == "cpu":
        return torch.device("cpu")
    raise TransferSegError(f"Unknown device '{name}': use auto, cpu, cuda or cuda:N.")


def device_description(device: torch.device) -> Dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "device_name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    return {"device": "cpu", "device_name": "CPU", "memory_gb": None}
