"""Where the client keeps the server URL and API token: a JSON file readable by its owner only (0600).

The file is $LORAWORKS_CONFIG, else $XDG_CONFIG_HOME/loraworks/config.json, else ~/.config/loraworks/config.json.
LORAWORKS_URL and LORAWORKS_TOKEN, when set, win over the file (handy in CI).
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def config_path() -> Path:
    if os.environ.get("LORAWORKS_CONFIG"):
        return Path(os.environ["LORAWORKS_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "loraworks" / "config.json"


def load() -> dict:
    path = config_path()
    data = json.loads(path.read_text()) if path.exists() else {}
    for key in ("url", "token"):
        if os.environ.get(f"LORAWORKS_{key.upper()}"):
            data[key] = os.environ[f"LORAWORKS_{key.upper()}"]
    return data


def save(data: dict) -> Path:
    """Write atomically, created 0600 from the start so the token is never readable by others, even briefly."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return path


def forget() -> bool:
    path = config_path()
    if path.exists():
        path.unlink()
        return True
    return False
