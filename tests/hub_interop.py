"""huggingface_hub's side of the cache interop test (driven by tests/hub_interop.rs).

Run with the venv from scripts/setup-test-python. Commands:
  download <endpoint> <cache> <repo> <revision> <file>...   fill <cache> with hf_hub_download
  check <cache> <repo> <revision> <file> <sha256>           find a file with try_to_load_from_cache
  hold-lock <lock path> <seconds>                           hold huggingface_hub's blob lock
Exits non-zero with a message on any mismatch.
"""

import hashlib
import os
import sys
import time


def fail(msg):
    print(f"hub_interop.py: {msg}", file=sys.stderr)
    sys.exit(1)


def download(endpoint, cache, repo, revision, files):
    from huggingface_hub import hf_hub_download

    for name in files:
        path = hf_hub_download(repo, name, revision=revision, cache_dir=cache, endpoint=endpoint)
        print(path)


def check(cache, repo, revision, name, sha256):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    path = try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision)
    if not isinstance(path, str):
        fail(f"try_to_load_from_cache({repo!r}, {name!r}, revision={revision!r}) returned {path!r}")
    with open(path, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != sha256:
        fail(f"{path}: sha256 {got}, expected {sha256}")
    if not os.path.islink(path) or os.path.isabs(os.readlink(path)):
        fail(f"{path} should be a relative symlink into blobs/")
    # scan_cache_dir validates the whole layout (refs, blobs, snapshot links) and reports oddities.
    info = scan_cache_dir(cache)
    if info.warnings:
        fail(f"scan_cache_dir warnings: {info.warnings}")
    repos = [r for r in info.repos if r.repo_id == repo]
    if not repos or not any(name in {f.file_name for f in rev.files} for rev in repos[0].revisions):
        fail(f"scan_cache_dir does not list {repo}/{name}: {info}")
    print(path)


def hold_lock(path, seconds):
    from filelock import FileLock

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileLock(path):
        print("locked", flush=True)
        time.sleep(float(seconds))


def main(argv):
    if not argv:
        fail(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "download" and len(args) >= 5:
        download(args[0], args[1], args[2], args[3], args[4:])
    elif cmd == "check" and len(args) == 5:
        check(*args)
    elif cmd == "hold-lock" and len(args) == 2:
        hold_lock(*args)
    else:
        fail(f"bad arguments: {argv}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
