"""The Teams app package: manifest with the app id, both icons at the sizes Teams requires."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from bot.chat.teams_package import MANIFEST_DIR, PLACEHOLDER, build_package
from procedures.catalogue import CATALOGUE

APP_ID = "11111111-2222-3333-4444-555555555555"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_package_has_manifest_with_the_id_and_both_icons(tmp_path: Path) -> None:
    out = build_package(APP_ID, tmp_path / "out" / "sms-bot-teams.zip")
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        assert png_size(archive.read("color.png")) == (192, 192)
        assert png_size(archive.read("outline.png")) == (32, 32)
    assert manifest["id"] == APP_ID
    assert manifest["bots"][0]["botId"] == APP_ID
    assert PLACEHOLDER not in json.dumps(manifest)


def test_manifest_follows_the_teams_rules() -> None:
    manifest = json.loads((MANIFEST_DIR / "manifest.json").read_text())
    major, minor = (int(p) for p in manifest["manifestVersion"].split("."))
    assert (major, minor) >= (1, 17)
    assert manifest["$schema"].endswith(
        f"v{manifest['manifestVersion']}/MicrosoftTeams.schema.json"
    )
    assert len(manifest["name"]["short"]) <= 30
    assert len(manifest["description"]["short"]) <= 80
    assert len(manifest["description"]["full"]) <= 4000
    (bot,) = manifest["bots"]
    assert set(bot["scopes"]) == {"team", "groupChat", "personal"}
    (commands,) = bot["commandLists"]
    assert len(commands["commands"]) <= 10  # Teams shows at most ten per list
    for entry in commands["commands"]:
        assert len(entry["title"]) <= 32 and len(entry["description"]) <= 128
        # every command offered exists in the command registry
        assert any(spec.usage.startswith(entry["title"]) for spec in CATALOGUE.commands()), entry


def test_outline_icon_is_white_on_transparent() -> None:
    import zlib

    data = (MANIFEST_DIR / "outline.png").read_bytes()
    assert data[24:26] == bytes([8, 6])  # 8-bit RGBA
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    pixels = [
        raw[row * 129 + 1 + i * 4 : row * 129 + 5 + i * 4] for row in range(32) for i in range(32)
    ]
    assert {p for p in pixels} == {b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"}


@pytest.mark.parametrize("bad", ["", "not-a-guid", "{{TEAMS_APP_ID}}"])
def test_a_wrong_app_id_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a GUID"):
        build_package(bad, tmp_path / "x.zip")
