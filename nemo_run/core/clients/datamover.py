"""Moving a code archive into a remote filesystem through environment variables.

Platforms that can run a container but not copy files into its storage (Run:ai, Lepton)
get the payload (a gzip'd tar) base64-encoded in environment variables of at most 100,000
characters each (below Linux's 128 KiB limit for one string, so nothing hits the per-argument
limit that breaks base64-in-argv movers), up to ~900 KB per helper workload. The command
stays a few hundred characters. Backend modules create, wait for and delete the helpers.
"""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
import time

CHUNK_CHARS = 100_000
CHUNKS_PER_WORKLOAD = 9


def build_payload(files: dict[str, bytes], archive: str | None, code_dir: str = "code") -> bytes:
    """A .tar.gz holding `files` at the top and the packager's archive under `code_dir/`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
            out.addfile(info, io.BytesIO(data))
        if archive:
            with tarfile.open(archive) as code:
                for member in code.getmembers():
                    data = code.extractfile(member) if member.isfile() else None
                    member.name = f"{code_dir}/{member.name}"
                    out.addfile(member, data)
    return buffer.getvalue()


def chunk_groups(payload: bytes) -> list[list[str]]:
    encoded = base64.b64encode(payload).decode("ascii")
    chunks = [encoded[i:i + CHUNK_CHARS] for i in range(0, len(encoded), CHUNK_CHARS)] or [""]
    return [chunks[i:i + CHUNKS_PER_WORKLOAD] for i in range(0, len(chunks), CHUNKS_PER_WORKLOAD)]


def unpack_script(dest: str, count: int, first: bool, last: bool) -> str:
    upload = shlex.quote(f"{dest}/.nemo_run_upload.b64")
    parts = ["set -e", f"mkdir -p {shlex.quote(dest)}"]
    if first:
        parts.append(f"rm -f {upload}")
    parts.append("printf %s " + '"' + "".join(f"$NEMORUN_CHUNK_{i}" for i in range(count)) + '"' + f" >> {upload}")
    if last:
        parts.append(f"base64 -d {upload} | tar -xzf - -C {shlex.quote(dest)}")
        parts.append(f"rm -f {upload}")
    return "; ".join(parts)
