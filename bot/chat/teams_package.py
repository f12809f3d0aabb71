"""The Teams app package to upload: ``deploy/teams`` with the bot's app id filled in.

Teams takes an app as a zip of ``manifest.json`` and its two icons at the
top level. The manifest in the repository carries ``{{TEAMS_APP_ID}}`` so
that no deployment's id is committed; ``build_package`` fills it in (the
app id and the bot id are the Azure Bot's app id) and refuses anything but
a GUID, since Teams rejects the upload with a less helpful message.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Final

__all__ = ["MANIFEST_DIR", "PLACEHOLDER", "build_package"]

# ``bot/teams_app`` links to ``deploy/teams`` in a checkout and is a copy in a wheel
# (package data): the same path either way.
MANIFEST_DIR: Final = Path(__file__).resolve().parents[1] / "teams_app"
PLACEHOLDER: Final = "{{TEAMS_APP_ID}}"
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_FILES: Final = ("manifest.json", "color.png", "outline.png")


def build_package(app_id: str, out_path: Path, *, source: Path = MANIFEST_DIR) -> Path:
    """Write the upload zip to ``out_path`` and return it."""
    if not _GUID.match(app_id):
        raise ValueError(f"TEAMS_APP_ID {app_id!r} is not a GUID (the Azure Bot's app id)")
    manifest_text = (source / "manifest.json").read_text(encoding="utf-8")
    if PLACEHOLDER not in manifest_text:
        raise ValueError(f"{source / 'manifest.json'} has no {PLACEHOLDER} to fill in")
    manifest = json.loads(manifest_text.replace(PLACEHOLDER, app_id.lower()))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
        for name in _FILES[1:]:
            archive.write(source / name, arcname=name)
    return out_path
