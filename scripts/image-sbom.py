#!/usr/bin/env python3
"""The image's SBOM (CycloneDX 1.5 JSON): cargo-cyclonedx's bill for the
weir crate (every crate Cargo.lock resolves for it on the image's target),
plus the Debian packages whose files scripts/image.sh copies into the image
(the loader, the shared libraries the binary links, the CA certificates),
with their installed versions. The image itself is the document's subject.

usage: image-sbom.py CARGO_BOM SYSTEM_TXT IMAGE_NAME DIGEST EPOCH REPO

SYSTEM_TXT: `PATH PACKAGE VERSION ARCH` lines (scripts/image.sh
system_packages). Written to stdout; deterministic for the same inputs.
"""

import datetime
import json
import sys
import uuid
from urllib.parse import quote


def main() -> None:
    cargo_bom, system_txt, image, digest, epoch, repo = sys.argv[1:7]
    with open(cargo_bom, encoding="utf-8") as f:
        # The workspace's crates are referred to by their checkout's path:
        # made relative, the bill is the same in every checkout.
        bom = json.loads(f.read().replace(f"file://{repo}/", "file://./"))

    packages: dict[str, dict] = {}
    with open(system_txt, encoding="utf-8") as f:
        for line in f:
            path, name, version, arch = line.split()
            package = packages.setdefault(
                name, {"version": version, "arch": arch, "paths": []}
            )
            package["paths"].append(path)
    debian = []
    for name, p in sorted(packages.items()):
        purl = (
            f"pkg:deb/debian/{name}@{quote(p['version'], safe='')}"
            f"?arch={p['arch']}&distro=debian-12"
        )
        debian.append(
            {
                "type": "library" if name != "ca-certificates" else "data",
                "bom-ref": purl,
                "name": name,
                "version": p["version"],
                "purl": purl,
                "publisher": "Debian",
                "properties": [
                    {"name": "weir:image:path", "value": path}
                    for path in sorted(p["paths"])
                ],
            }
        )
    bom["components"] = bom.get("components", []) + debian

    # The image is what this bill describes; the weir crate (cargo's
    # subject) is its main component.
    name, _, tag = image.rpartition(":")
    weir = bom["metadata"].get("component")
    image_ref = f"pkg:oci/weir@{quote(digest, safe='')}?repository_url={quote(name, safe='')}&tag={tag}"
    bom["metadata"]["component"] = {
        "type": "container",
        "bom-ref": image_ref,
        "name": name,
        "version": tag,
        "purl": image_ref,
        "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
    }
    if weir is not None:
        bom["components"].insert(0, weir)
    bom["metadata"]["timestamp"] = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    # The same image, the same serial number.
    bom["serialNumber"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_ref)}"
    deps = bom.setdefault("dependencies", [])
    if weir is not None:
        deps.append(
            {
                "ref": image_ref,
                "dependsOn": [weir["bom-ref"]] + [d["bom-ref"] for d in debian],
            }
        )
    json.dump(bom, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
