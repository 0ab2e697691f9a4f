"""SHA-256 checksums of a checkpoint's files, written after a save and verified on restore.

orbax reads a checkpoint whose bytes were damaged on disk without complaint when the damage
leaves the file parseable (a flipped byte in an array chunk), so the weights would silently
change. The checksum file sits in the step's directory and goes when orbax removes the step.
Files are read through harness/storage.py, so a checkpoint on gs:// is checked where it lies.
"""

import hashlib

from harness import files, storage
from harness.run_dir import bounded, names

CHECKSUM_FILE = names.CHECKSUM_FILE


_CHUNK = 2**20


def digest(path: str) -> str:
    # Chunked reads, not hashlib.file_digest: that needs readinto(), which gfile lacks.
    sha = hashlib.sha256()
    with storage.open_file(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def file_digests(directory: str) -> dict[str, str]:
    """{path relative to `directory`: sha256} of every file under it but the checksum file."""
    digests = {}
    for folder, _, file_names in storage.walk(directory):
        for name in file_names:
            path = storage.join(folder, name)
            relative = storage.relative(path, directory)
            if relative != CHECKSUM_FILE:
                digests[relative] = digest(path)
    return dict(sorted(digests.items()))


def write(directory: str) -> None:
    files.write_json_atomically(storage.join(directory, CHECKSUM_FILE), file_digests(directory))


def verify(directory: str) -> None:
    """Raises ValueError naming the first recorded file that is missing or differs. A
    checkpoint without checksums (saved before they existed, or killed between the save and
    writing them) passes; restore still checks its weights are finite."""
    path = storage.join(directory, CHECKSUM_FILE)
    if not storage.isfile(path):
        return
    recorded = bounded.read_json_object(path)
    for relative, expected in recorded.items():
        full = storage.join(directory, relative)
        if not storage.isfile(full):
            raise ValueError(f"{relative} is missing")
        if digest(full) != expected:
            raise ValueError(f"{relative} does not match its checksum")
