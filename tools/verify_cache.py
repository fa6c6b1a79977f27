#!/usr/bin/env python3
"""Remove the blobs of a Bazel cache whose content does not hash to their name.

    tools/verify_cache.py DIR [--dry-run]

DIR is a disk cache (`--disk_cache=DIR`: blobs in DIR/cas/XX/<sha256>) or the
store of tools/cache_server.sh (STATE_DIR/store: blobs in cas/<sha256>).
Bazel 4.2 catches a corrupted or truncated blob when it downloads it (the
action then runs), but a disk cache never replaces a blob that exists, so
every clean build re-runs that action. Once the blob is removed, the next
build that runs the action stores it again. Exit status: 0 when every blob was
whole, 1 when some were removed (or would be, with --dry-run), 2 on bad usage.

It cannot detect an action-cache entry pointing at another valid blob (a
planted result): only trusted writers prevent that (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bad_blobs(cache: str) -> list[str]:
    """Paths of the blobs under CACHE/cas whose sha256 is not their name."""
    bad = []
    for root, _dirs, files in os.walk(os.path.join(cache, "cas")):
        for name in files:
            if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
                continue  # not a blob (a temporary upload, ...)
            path = os.path.join(root, name)
            if not os.path.isfile(path) or os.path.islink(path):
                bad.append(path)
            elif sha256_of(path) != name:
                bad.append(path)
    return sorted(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "cache", help="a --disk_cache directory or cache_server.sh's store"
    )
    parser.add_argument("--dry-run", action="store_true", help="list, do not remove")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.cache, "cas")):
        print(
            f"verify_cache.py: {args.cache} has no cas/ directory; is it a cache?",
            file=sys.stderr,
        )
        return 2
    bad = bad_blobs(args.cache)
    for path in bad:
        if not args.dry_run:
            os.unlink(path)
        print(f"{'corrupt' if args.dry_run else 'removed'}: {path}")
    print(
        f"verify_cache.py: {len(bad)} corrupt blob(s){'' if args.dry_run else ' removed'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
