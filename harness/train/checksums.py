"""SHA-256 checksums of a checkpoint's files, written after a save and verified on restore.

orbax reads a checkpoint whose bytes were damaged on disk without complaint when the damage
leaves the file parseable (a flipped byte in an array chunk), so the weights would silently
change. The checksum file sits in the step's directory and goes when orbax removes the step.
"""

import hashlib
import json
import os

from harness import files

CHECKSUM_FILE = "checksums.sha256.json"


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(directory: str) -> dict[str, str]:
    """{path relative to `directory`: sha256} of every file under it but the checksum file."""
    digests = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, directory)
            if relative != CHECKSUM_FILE:
                digests[relative] = digest(path)
    return dict(sorted(digests.items()))


def write(directory: str) -> None:
    files.write_json_atomically(os.path.join(directory, CHECKSUM_FILE), file_digests(directory))


def verify(directory: str) -> None:
    """Raises ValueError naming the first recorded file that is missing or differs. A
    checkpoint without checksums (saved before they existed, or killed between the save and
    writing them) passes; restore still checks its weights are finite."""
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        recorded = json.load(f)
    for relative, expected in recorded.items():
        full = os.path.join(directory, relative)
        if not os.path.isfile(full):
            raise ValueError(f"{relative} is missing")
        if digest(full) != expected:
            raise ValueError(f"{relative} does not match its checksum")
