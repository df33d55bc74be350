"""Read the shipped calibration reports (assets/calibration/<model-key>.json) for display.

Written by ``steering-lab calibrate --ship``; see app.core.calibrate for what they hold. A
missing or unreadable file reads as "no calibration", never as an error on a page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .slugs import validate_model_key

CALIBRATION_DIR = Path(__file__).resolve().parents[2] / "assets" / "calibration"


def load_calibration(key: str, folder: Optional[Path] = None) -> dict[str, Any]:
    """slug -> report for one model key ({} when there is none)."""
    path = (folder or CALIBRATION_DIR) / f"{validate_model_key(key)}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    concepts = data.get("concepts") if isinstance(data, dict) else None
    return concepts if isinstance(concepts, dict) else {}
