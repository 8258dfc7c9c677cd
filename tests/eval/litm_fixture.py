"""Hand-made Lost-in-the-Middle fixtures, laid out under the benchmark's own file names at test time.

The committed files carry neutral names (they are fictional text, nothing from the real benchmark); the
loader looks for `<N>_total_documents/nq-open-<N>_total_documents_gold_at_<k>.jsonl(.gz)`, so tests copy
them into that layout in a temporary folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

HANDMADE = Path(__file__).parent / "fixtures" / "litm_handmade"


def litm_layout(dest: Path) -> Path:
    """Copy the hand-made fixtures into `dest` under the benchmark's names; returns `dest`."""
    for src in sorted(HANDMADE.iterdir()):
        m = re.match(r"handmade-(\d+)docs-gold_at_(\d+)(\.jsonl(?:\.gz)?)$", src.name)
        if not m:
            continue
        n, k, ext = m.groups()
        folder = dest / f"{n}_total_documents"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / f"nq-open-{n}_total_documents_gold_at_{k}{ext}")
    return dest
