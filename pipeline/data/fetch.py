"""Source files on local disk, checksum-verified: from a mirror directory or downloaded with pooch.

    params.data.sources[file] (url, "sha256:..."/"md5:...")
        --mirror set-->  <mirror>/<file> or <mirror>/<folder>/<file>, hash verified in place (nothing is copied)
        --otherwise-->   <data.root>/raw/<file>, downloaded by pooch to a temporary name in raw/ and renamed only
                         after the hash passed; a corrupt or truncated download is reported and fetched again
                         (data.download_retries times)

Also here: `safe_extract`, the only way an archive is unpacked (no absolute paths, no `..`, no links or devices
pointing outside the destination), so that nothing in a downloaded tarball can write outside its folder.
"""
from __future__ import annotations

import sys
import tarfile
from pathlib import Path, PurePosixPath

import pooch
from filelock import FileLock

from ..errors import PipelineError

DOWNLOAD_TIMEOUT_S = 60  # per network read; a stalled connection fails (and is retried) instead of hanging a job


class DataError(PipelineError, ValueError):
    """Bad or missing data input: the message is one line naming the file, archive, dataset or subset."""


# ---- verification -------------------------------------------------------------------------------------------
def file_digest(path: Path, known_hash: str) -> str:
    """The digest of `path` in the algorithm of `known_hash` ("sha256:<hex>" or "md5:<hex>"), same prefix."""
    alg = known_hash.split(":", 1)[0]
    return f"{alg}:{pooch.file_hash(str(path), alg=alg)}"


def verify(path: Path, known_hash: str) -> None:
    """Raise DataError unless the file's digest equals `known_hash` (checked before any byte is parsed)."""
    got = file_digest(path, known_hash)
    if got != known_hash.lower():
        raise DataError(f"{path}: checksum mismatch, expected {known_hash} but got {got}")


# ---- fetching -----------------------------------------------------------------------------------------------
def raw_dir(params) -> Path:
    return params.data_root() / "raw"


def fetch(params, file_name: str) -> Path:
    """Local path of a verified source file named in params.data.sources (mirror first, else download)."""
    if file_name not in params.data.sources:
        raise DataError(f"{file_name}: not listed in data.sources of params.yaml")
    source = params.data.sources[file_name]
    mirror = params.mirror()
    if mirror is not None:
        return from_mirror(mirror, file_name, source.hash)
    return download(source.url, source.hash, raw_dir(params), file_name, params.data.download_retries)


def from_mirror(mirror: Path, file_name: str, known_hash: str) -> Path:
    """<mirror>/<file_name>, or <mirror>/<folder>/<file_name> (a mirror root with a folder per dataset, such as
    datasets/ptb/), after its checksum passed; a mirror is trusted for availability, never for content."""
    mirror = Path(mirror)
    flat = mirror / file_name
    found = [flat] if flat.is_file() else sorted(p for p in mirror.glob(f"*/{file_name}") if p.is_file())
    if not found:
        raise DataError(f"{file_name}: not found in data mirror {mirror} (nor in a folder one level below it)")
    if len(found) > 1:
        raise DataError(f"{file_name}: ambiguous in data mirror {mirror}: {', '.join(str(p) for p in found)}")
    verify(found[0], known_hash)
    return found[0]


def download(url: str, known_hash: str, dest_dir: Path, file_name: str, retries: int) -> Path:
    """Download `url` to dest_dir/file_name unless a file with the right hash is already there.

    pooch streams into a temporary file inside dest_dir, checks the hash and only then moves it to the final name
    (a failed attempt deletes the temporary file), so a killed or corrupt download never sits under the final name.
    Retries are done here rather than by pooch (whose retries sleep between attempts and are not exposed by
    `retrieve`), and every failed attempt is reported on stderr. A file lock keeps two concurrent jobs from
    downloading the same file at once.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=DOWNLOAD_TIMEOUT_S)
    if not url.startswith(("http://", "https://")):
        downloader = None  # ftp/sftp/doi: let pooch choose its own downloader
    attempts = 1 + retries
    last = ""
    with FileLock(str(dest_dir / f".{file_name}.lock")):
        for attempt in range(1, attempts + 1):
            try:
                got = pooch.retrieve(url, known_hash=known_hash, fname=file_name, path=dest_dir,
                                     downloader=downloader, progressbar=sys.stderr.isatty())
                return Path(got)
            except (ValueError, OSError) as err:  # hash mismatch, or a network error (requests' are OSErrors)
                last = " ".join(str(err).split())
                print(f"download {file_name} attempt {attempt}/{attempts} failed: {last}", file=sys.stderr)
    raise DataError(f"{file_name}: download from {url} failed after {attempts} attempt(s): {last} "
                    "(offline? set data.mirror or PIPELINE_DATA_MIRROR to a directory holding it)")


# ---- archives -------------------------------------------------------------------------------------------------
def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar archive into dest, refusing any member that could land outside it.

    Two guards: our own check (absolute names or `..` components are refused up front with a one-line error,
    before anything is written) and tarfile's "data" filter (also refuses links pointing outside, device files,
    and strips set-uid bits), whose refusals are turned into the same kind of one-line error.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
                    raise DataError(f"{archive.name}: refusing archive member {member.name!r} (absolute path or '..')")
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as err:
        name = err.tarinfo.name
        raise DataError(f"{archive.name}: refusing archive member {name!r} ({type(err).__name__})") from None
    except tarfile.TarError as err:
        raise DataError(f"{archive.name}: not a readable tar archive ({err})") from None
