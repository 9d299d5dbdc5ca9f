#!/usr/bin/env python3
"""Makes an OCI image archive (for `ctr images import`) from a directory: one layer.

    oci-image.py NAME ROOTFS OUT.tar [--entrypoint "PATH ARG.."] [--cmd "ARG.."] [--user UID]
                 [--workdir DIR] [--env NAME=VALUE ...]

No registry is reachable from the project's machines, so the local cluster's images
(the pod sandbox's pause, images from a debootstrap base) are made here, byte for byte.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_of(rootfs: str) -> bytes:
    """The directory as an uncompressed tar layer, owned by root, with fixed mtimes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            relative = os.path.relpath(top, rootfs)
            if relative in ("dev", "proc", "sys"):
                # The runtime mounts these; their contents do not belong in an image.
                dirs.clear()
                continue
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(top, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                if info is None:  # a socket
                    continue
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def blob(out: tarfile.TarFile, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    add(out, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return {"digest": digest, "size": len(data)}


def add(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", help="image reference, e.g. foodlab.local/pause:3.10")
    parser.add_argument("rootfs")
    parser.add_argument("out")
    parser.add_argument("--entrypoint", default="", help="words separated by spaces")
    parser.add_argument("--cmd", default="", help="words separated by spaces")
    parser.add_argument("--user", default="")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--env", nargs="+", default=[])
    args = parser.parse_args()

    layer = layer_of(args.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": args.entrypoint.split(),
            "Cmd": args.cmd.split(),
            "User": args.user,
            "WorkingDir": args.workdir,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *args.env],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    with tarfile.open(args.out + ".partial", mode="w") as out:
        add(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        layer_desc = blob(out, layer)
        config_desc = blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
        }
        manifest_desc = blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {
                    "io.containerd.image.name": args.name,
                    "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1],
                },
            }],
        }
        add(out, "index.json", json.dumps(index, sort_keys=True).encode())
    os.replace(args.out + ".partial", args.out)


if __name__ == "__main__":
    main()
