"""Which packages the sandbox interpreter can import, and the cached environment that extra ones go into.

Installing is opt-in (`sandbox.install_packages`) and happens at most once per package: into one virtual
environment under the user cache that sees all of our own packages, reused by every later run.

The names come from the optimizer, a model: each must be a PEP 508 requirement without a URL or markers
(`name[extras]>=version`), checked before any process starts, so that no entry can be read by pip as an option,
a file, a URL or a VCS checkout. pip then installs wheels only (no package's build code runs as our user), into
that environment only, with the user's own pip configuration (index, certificates) and no other secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import re
import site
import sys
import venv
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs
from packaging.requirements import InvalidRequirement, Requirement

from agenttrain.errors import UserError

# pip names whose import name is not simply the name lowercased with '-' as '_'.
IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "scikit-image": "skimage",
    "pillow": "PIL",
    "beautifulsoup4": "bs4",
    "python-dateutil": "dateutil",
    "pyyaml": "yaml",
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "pymupdf": "fitz",
    "python-docx": "docx",
    "python-pptx": "pptx",
    "attrs": "attr",
    "protobuf": "google.protobuf",
}
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
MAX_REQUIREMENT_CHARS = 200
# What pip needs from our environment besides its own PIP_* settings; API keys and the like stay behind.
PIP_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                   "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")  # fmt: skip
_FIND_MISSING = (
    "import importlib.util, json, sys\n"
    "def found(name):\n"
    "    try:\n"
    "        return importlib.util.find_spec(name) is not None\n"
    "    except (ImportError, ValueError):\n"
    "        return False\n"
    "print(json.dumps([n for n in json.loads(sys.argv[1]) if not found(n)]))\n"
)


class PackageInstallError(UserError):
    """pip could not install a package into the sandbox environment."""


class InvalidPackage(UserError):
    """An entry of `packages` that is not a plain package requirement."""


def check_requirements(packages: Sequence[str]) -> None:
    """Raise InvalidPackage naming the first entry that is not `name[extras]<specifiers>` (PEP 508)."""
    for package in packages:
        problem = _requirement_problem(package)
        if problem:
            raise InvalidPackage(f"{package!r} is {problem}: list packages as `name` or `name>=version`")


def _requirement_problem(package: str) -> str | None:
    if not isinstance(package, str) or len(package) > MAX_REQUIREMENT_CHARS or not package.isprintable():
        return "not a package name"
    try:
        requirement = Requirement(package)
    except InvalidRequirement:
        return "not a package name (pip options, paths and VCS links are not accepted)"
    if requirement.url:
        return "a URL, not a package name"
    if requirement.marker:
        return "a requirement with environment markers, which the sandbox does not accept"
    return None


def import_name(package: str) -> str:
    """`scikit-learn>=1.3` -> `sklearn`; `my-Package` -> `my_package`."""
    match = _REQUIREMENT_NAME.match(package)
    name = (match.group(1) if match else package).lower()
    return IMPORT_NAMES.get(name, name.replace("-", "_").replace(".", "_"))


async def find_missing(python: str, env: Mapping[str, str], packages: Sequence[str]) -> list[str]:
    """The packages (pip names) whose module `python` cannot find; nothing is imported."""
    modules = [import_name(p) for p in packages]
    process = await asyncio.create_subprocess_exec(
        python, "-c", _FIND_MISSING, json.dumps(modules),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(env), cwd="/",
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise UserError(f"cannot check packages with the sandbox interpreter {python}: {stderr.decode()[-500:]}")
    missing = set(json.loads(stdout))
    return [p for p, module in zip(packages, modules, strict=True) if module in missing]


def distribution_names(extra_paths: Sequence[str] = ()) -> list[str]:
    """Installed distributions visible to our interpreter, plus those under `extra_paths`."""
    found = importlib.metadata.distributions(path=[*extra_paths, *sys.path])
    return sorted({d.metadata["Name"] for d in found if d.metadata["Name"]})


class PackageEnvironment:
    """A venv under the user cache, created once, whose interpreter also sees every package we have."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        base = cache_dir or Path(platformdirs.user_cache_dir("agenttrain"))
        self.path = base / "sandbox-envs" / self._key()

    @staticmethod
    def _key() -> str:
        """Depends on our interpreter and its packages, so another project or Python gets its own env."""
        identity = json.dumps([sys.executable, sys.version, site.getsitepackages()])
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def exists(self) -> bool:
        return self.python.exists()

    def site_packages(self) -> list[str]:
        return [str(p) for p in self.path.glob("lib/python*/site-packages")]

    def pip_command(self, packages: Sequence[str]) -> list[str]:
        """pip installing `packages` into this environment; the names come after `--`, where nothing is an option."""
        check_requirements(packages)
        return [
            sys.executable, "-m", "pip", "--python", str(self.python), "install", "--quiet", "--no-input",
            "--disable-pip-version-check", "--only-binary=:all:", "--", *packages,
        ]  # fmt: skip

    async def install(self, packages: Sequence[str]) -> None:
        command = self.pip_command(packages)
        if not self.exists:
            await asyncio.to_thread(self.create)
        environment = {k: v for k, v in os.environ.items() if k in PIP_ENVIRONMENT or k.startswith("PIP_")}
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environment, cwd=self.path,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise PackageInstallError(
                f"could not install {', '.join(packages)} into the sandbox environment {self.path}:\n"
                f"{output.decode()[-1500:]}"
            )

    def create(self) -> None:
        # --system-site-packages alone would show the base Python's packages, not ours when we run in a
        # venv; a .pth file adds our site-packages (with their own .pth files, e.g. editable installs).
        venv.create(self.path, system_site_packages=True, with_pip=False, symlinks=True)
        (site_packages,) = self.site_packages()
        lines = [f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()]
        (Path(site_packages) / "_agenttrain_parent.pth").write_text("".join(lines))
