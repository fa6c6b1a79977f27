"""A minimal REAPI worker for BuildGrid, for databazel's tests only.

TEST FIXTURE, NOT FOR PRODUCTION. No BuildGrid release on PyPI ships a worker
(BuildGrid's own, buildbox-worker with buildbox-run-*, is C++). This one
exists so the end-to-end tests can run remote execution on loopback. For real
use, run buildbox-worker next to BuildGrid, or a hosted REAPI service.

What it does, one action at a time:
  1. takes leases through the Remote Workers API (Bots service):
     CreateBotSession, then UpdateBotSession in a loop;
  2. reads the Action and Command from CAS and materialises the input root in
     a fresh directory: directories and files it has not seen are fetched
     (BatchReadBlobs, or ByteStream Read for large ones) into a local content
     cache, and every file is a hard link to its blob there (LocalCache);
  3. runs the command there with exactly the Command's environment (nothing of
     the worker's own), killing it after the Action's timeout;
  4. uploads the declared outputs, stdout and stderr, and reports an
     ActionResult as the lease's result (BuildGrid stores it in its action cache).

There is no sandbox and no container: the command sees the worker's file
system, and absolute paths (an interpreter a venv links to) must exist on the
worker. Platform properties (such as container-image from `exec_properties`)
are logged, not enforced.

Runs with the Python of the BuildGrid venv (it imports BuildGrid's generated
protos and grpc):

    .local/buildgrid-venv/bin/python tests/remote/worker.py \
        --server 127.0.0.1:PORT --name worker-1 --work-dir DIR
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re_pb2,
)
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildgrid._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import (
    bots_pb2,
    bots_pb2_grpc,
)

BATCH_LIMIT = 1 << 20  # blobs above this go through ByteStream
CHUNK = 1 << 20

_stopping = False
_busy = False


def log(name: str, message: str) -> None:
    print(f"worker {name}: {message}", file=sys.stderr, flush=True)


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class Cas:
    def __init__(self, channel: grpc.Channel, instance: str) -> None:
        self.instance = instance
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bytestream_pb2_grpc.ByteStreamStub(channel)

    def _resource(self, digest: re_pb2.Digest) -> str:
        prefix = f"{self.instance}/" if self.instance else ""
        return f"{prefix}blobs/{digest.hash}/{digest.size_bytes}"

    def read(self, digests: list[re_pb2.Digest]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        batch: list[re_pb2.Digest] = []
        size = 0

        def flush() -> None:
            nonlocal batch, size
            if not batch:
                return
            response = self.cas.BatchReadBlobs(
                re_pb2.BatchReadBlobsRequest(instance_name=self.instance, digests=batch)
            )
            for r in response.responses:
                if r.status.code != 0:
                    raise RuntimeError(
                        f"CAS read of {r.digest.hash} failed: {r.status.message}"
                    )
                out[r.digest.hash] = r.data
            batch, size = [], 0

        for d in digests:
            if d.hash in out or d.size_bytes == 0:
                out.setdefault(d.hash, b"")
                continue
            if d.size_bytes > BATCH_LIMIT:
                request = bytestream_pb2.ReadRequest(resource_name=self._resource(d))
                out[d.hash] = b"".join(
                    chunk.data for chunk in self.bytestream.Read(request)
                )
                continue
            if size + d.size_bytes > BATCH_LIMIT:
                flush()
            batch.append(d)
            size += d.size_bytes
        flush()
        return out

    def write(self, blobs: dict[str, bytes]) -> None:
        digests = [digest_of(b) for b in blobs.values()]
        missing = self.cas.FindMissingBlobs(
            re_pb2.FindMissingBlobsRequest(
                instance_name=self.instance, blob_digests=digests
            )
        ).missing_blob_digests
        small = []
        for d in missing:
            data = blobs[d.hash]
            if d.size_bytes > BATCH_LIMIT:
                resource = (
                    f"{self.instance + '/' if self.instance else ''}uploads/"
                    f"{uuid.uuid4()}/blobs/{d.hash}/{d.size_bytes}"
                )

                def requests(data=data, resource=resource):
                    for offset in range(0, len(data), CHUNK):
                        yield bytestream_pb2.WriteRequest(
                            resource_name=resource if offset == 0 else "",
                            write_offset=offset,
                            data=data[offset : offset + CHUNK],
                            finish_write=offset + CHUNK >= len(data),
                        )

                self.bytestream.Write(requests())
            else:
                small.append(
                    re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=data)
                )
        for start in range(0, len(small), 100):
            response = self.cas.BatchUpdateBlobs(
                re_pb2.BatchUpdateBlobsRequest(
                    instance_name=self.instance, requests=small[start : start + 100]
                )
            )
            for r in response.responses:
                if r.status.code != 0:
                    raise RuntimeError(f"CAS write failed: {r.status.message}")


class LocalCache:
    """Blobs by digest in one directory, hard-linked into each action's input root.

    As buildbox-casd and Buildbarn's bb_worker do: a file the worker has seen
    costs a link, not a download. `HASH` holds a blob read-only, `HASH.x` the
    same blob executable (a hard link shares its mode). Blobs are written to a
    temporary name and renamed, so workers can share one directory. Nothing is
    ever evicted (a fixture: see docs/remote-execution.md). Directory protos are
    kept in memory, so only directories not seen before are fetched.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.directories: dict[str, re_pb2.Directory] = {}

    def file(self, digest: re_pb2.Digest, executable: bool) -> str:
        return os.path.join(self.path, digest.hash + (".x" if executable else ""))

    def put(self, digest: re_pb2.Digest, executable: bool, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o555 if executable else 0o444)
        os.replace(tmp, self.file(digest, executable))

    def tree(self, cas: Cas, root: re_pb2.Digest) -> int:
        """Fetches the directories under ROOT not seen before; returns how many."""
        fetched, level = 0, [root]
        while level:
            missing = {
                d.hash: d
                for d in level
                if d.size_bytes and d.hash not in self.directories
            }
            for h, data in cas.read(list(missing.values())).items():
                self.directories[h] = re_pb2.Directory.FromString(data)
            fetched += len(missing)
            level = [
                child.digest
                for d in {d.hash: d for d in level if d.size_bytes}.values()
                for child in self.directories[d.hash].directories
            ]
        return fetched


def materialise(
    cas: Cas, cache: LocalCache, root_digest: re_pb2.Digest, target: str
) -> dict[str, float]:
    """Writes the input root ROOT_DIGEST into the directory TARGET, through CACHE.

    Returns what it cost: files, files and bytes fetched, directories fetched, seconds.
    """
    start = time.monotonic()
    directories = cache.tree(cas, root_digest)
    files: list[tuple[str, re_pb2.FileNode]] = []

    def walk(digest: re_pb2.Digest, path: str) -> None:
        directory = (
            cache.directories[digest.hash] if digest.size_bytes else re_pb2.Directory()
        )
        os.makedirs(path, exist_ok=True)
        for f in directory.files:
            files.append((os.path.join(path, f.name), f))
        for s in directory.symlinks:
            os.symlink(s.target, os.path.join(path, s.name))
        for d in directory.directories:
            walk(d.digest, os.path.join(path, d.name))

    walk(root_digest, target)
    missing = {
        (f.digest.hash, f.is_executable): f
        for _, f in files
        if not os.path.exists(cache.file(f.digest, f.is_executable))
    }
    contents = cas.read([f.digest for f in missing.values()])
    for f in missing.values():
        cache.put(f.digest, f.is_executable, contents[f.digest.hash])
    for path, f in files:
        try:
            os.link(cache.file(f.digest, f.is_executable), path)
        except OSError as e:  # EMLINK: too many links to one blob (an empty file)
            if e.errno != errno.EMLINK:
                raise
            shutil.copy2(cache.file(f.digest, f.is_executable), path)
    return {
        "files": len(files),
        "fetched": len(missing),
        "bytes": sum(f.digest.size_bytes for f in missing.values()),
        "directories": directories,
        "seconds": time.monotonic() - start,
    }


def tree_of(path: str) -> re_pb2.Tree:
    """The Tree proto of the output directory PATH (files only, plus subdirectories)."""

    def directory(p: str, children: list[re_pb2.Directory]) -> re_pb2.Directory:
        node = re_pb2.Directory()
        for name in sorted(os.listdir(p)):
            full = os.path.join(p, name)
            if os.path.isdir(full):
                child = directory(full, children)
                children.append(child)
                node.directories.add(
                    name=name, digest=digest_of(child.SerializeToString())
                )
            else:
                with open(full, "rb") as fh:
                    data = fh.read()
                node.files.add(
                    name=name,
                    digest=digest_of(data),
                    is_executable=os.access(full, os.X_OK),
                )
        return node

    children: list[re_pb2.Directory] = []
    root = directory(path, children)
    return re_pb2.Tree(root=root, children=children)


def _files_under(path: str) -> dict[str, bytes]:
    blobs = {}
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                data = fh.read()
            blobs[hashlib.sha256(data).hexdigest()] = data
    return blobs


def execute(
    cas: Cas, cache: LocalCache, name: str, action: re_pb2.Action, scratch: str
) -> re_pb2.ActionResult:
    command = re_pb2.Command()
    command.ParseFromString(
        cas.read([action.command_digest])[action.command_digest.hash]
    )
    platform = {p.name: p.value for p in action.platform.properties} or {
        p.name: p.value for p in command.platform.properties
    }
    root = tempfile.mkdtemp(prefix="action-", dir=scratch)
    try:
        inputs = materialise(cas, cache, action.input_root_digest, root)
        log(
            name,
            f"input root: {inputs['files']} files, {inputs['fetched']} fetched "
            f"({inputs['bytes'] / 1e6:.1f} MB), {inputs['directories']} directories "
            f"fetched, in {inputs['seconds']:.2f}s",
        )
        cwd = os.path.join(root, command.working_directory)
        outputs = list(command.output_files) + list(command.output_directories)
        for out in outputs:
            os.makedirs(os.path.dirname(os.path.join(cwd, out)), exist_ok=True)
        argv = list(command.arguments)
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = os.path.join(cwd, argv[0])
        env = {v.name: v.value for v in command.environment_variables}
        timeout = action.timeout.seconds or None
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            exit_code = -signal.SIGKILL
        log(
            name,
            f"ran action for {', '.join(outputs)} exit={exit_code} "
            f"in {time.monotonic() - start:.1f}s platform={platform}",
        )

        result = re_pb2.ActionResult(exit_code=exit_code)
        blobs = {}
        for data, field in ((stdout, "stdout_digest"), (stderr, "stderr_digest")):
            d = digest_of(data)
            blobs[d.hash] = data
            getattr(result, field).CopyFrom(d)
        for out in command.output_files:
            path = os.path.join(cwd, out)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    data = fh.read()
                d = digest_of(data)
                blobs[d.hash] = data
                result.output_files.add(
                    path=out, digest=d, is_executable=os.access(path, os.X_OK)
                )
        for out in command.output_directories:
            path = os.path.join(cwd, out)
            if os.path.isdir(path):
                blobs.update(_files_under(path))
                tree = tree_of(path)
                data = tree.SerializeToString()
                d = digest_of(data)
                blobs[d.hash] = data
                result.output_directories.add(path=out, tree_digest=d)
        upload = time.monotonic()
        cas.write(blobs)
        log(name, f"outputs uploaded in {time.monotonic() - upload:.2f}s")
        return result
    finally:
        shutil.rmtree(root, onerror=_force_remove)


def _force_remove(func, path, _exc) -> None:
    os.chmod(os.path.dirname(path), stat.S_IRWXU)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, stat.S_IRWXU)
    func(path)


def run_lease(
    cas: Cas, cache: LocalCache, args: argparse.Namespace, lease: bots_pb2.Lease
) -> None:
    """Executes the lease's action and marks the lease completed, with its result."""
    global _busy
    _busy = True
    try:
        action = re_pb2.Action()
        if lease.payload.Is(re_pb2.Action.DESCRIPTOR):
            lease.payload.Unpack(action)
        else:
            digest = re_pb2.Digest()
            lease.payload.Unpack(digest)
            action.ParseFromString(cas.read([digest])[digest.hash])
        result = execute(cas, cache, args.name, action, args.work_dir)
        lease.result.Pack(result)
        lease.status.code = 0
    except Exception as e:  # report it: never leave the build waiting
        log(args.name, f"lease {lease.id} failed: {e!r}")
        lease.status.code = 13  # INTERNAL
        lease.status.message = f"fixture worker: {e!r}"
    finally:
        _busy = False
    lease.state = bots_pb2.COMPLETED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of BuildGrid")
    parser.add_argument("--name", required=True, help="bot id, unique per worker")
    parser.add_argument("--work-dir", required=True, help="scratch space for actions")
    parser.add_argument("--instance", default="", help="instance name (default: empty)")
    parser.add_argument(
        "--cache-dir",
        help="local content cache, on the work dir's file system (default: WORK_DIR/cache)",
    )
    args = parser.parse_args()

    def stop(_signum, _frame):
        global _stopping
        if not _busy:
            os._exit(0)  # idle: nothing to finish or report
        _stopping = True  # finish and report the current action first

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.makedirs(args.work_dir, exist_ok=True)

    channel = grpc.insecure_channel(args.server)
    grpc.channel_ready_future(channel).result(timeout=30)
    bots = bots_pb2_grpc.BotsStub(channel)
    cas = Cas(channel, args.instance)
    cache = LocalCache(args.cache_dir or os.path.join(args.work_dir, "cache"))
    session = bots.CreateBotSession(
        bots_pb2.CreateBotSessionRequest(
            parent=args.instance,
            bot_session=bots_pb2.BotSession(bot_id=args.name, status=bots_pb2.OK),
        )
    )
    log(args.name, f"connected to {args.server} as {session.name}")
    while True:
        # Reports the leases completed last round, and waits for new ones.
        try:
            session = bots.UpdateBotSession(
                bots_pb2.UpdateBotSessionRequest(
                    name=session.name, bot_session=session
                ),
                timeout=5,
            )
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                log(args.name, f"UpdateBotSession: {e.code().name}: {e.details()}")
                time.sleep(0.5)
            continue
        if _stopping:
            break
        for lease in session.leases:
            if lease.state in (bots_pb2.PENDING, bots_pb2.ACTIVE):
                run_lease(cas, cache, args, lease)
    log(args.name, "stopping")


if __name__ == "__main__":
    main()
