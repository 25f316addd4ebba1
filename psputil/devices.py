"""Choosing the compute device and describing the software a result was computed with."""

import platform

import torch


def available():
    """The device names this machine's torch can compute on: auto, cpu, and cuda, cuda:0 .. cuda:N-1 when present."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ("auto", "cpu") + (("cuda",) + tuple(f"cuda:{i}" for i in range(count)) if count else ())


def resolve(device="auto"):
    """A ``torch.device``: "auto" means CUDA when present, else the CPU.

    Raises:
        ValueError: a device this machine cannot compute on (mps, xpu, meta, a missing cuda:N, ...),
            naming the valid ones.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = available()
    if device not in valid:
        note = "" if "cuda" in valid else " (no CUDA device here)"
        raise ValueError(f"unknown device {device!r}; valid here: {', '.join(valid)}{note}")
    return torch.device(device)


def environment(device="auto"):
    """Versions and hardware, as a dict of strings (recorded on every book page)."""
    import torchvision

    device = resolve(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": f"{device} ({name})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
