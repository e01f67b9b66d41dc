"""Read the GPU image's pins (docker/pins.toml) for the shell scripts and the image build.

    pins.py get KEY                     one value, by dotted key: `image.base`, `cpu.torch`, ...
    pins.py constraints --target T      a pip constraints file (T: gpu = the image's own pins;
                                        cpu = the same with the CPU torch in place of the image's)
    pins.py check --target T            this Python's installed versions against those
                                        constraints; exit 1 naming each one outside them
    (--pins FILE before the command reads another file: the tests use it.)

Standard library only for `get` and `constraints` (they run before any venv exists); `check`
needs `packaging`, which any Python with transformers installed has.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PINS = Path(__file__).resolve().parents[1] / "docker" / "pins.toml"


def load(path: Path = PINS) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def get(pins: dict, key: str):
    node = pins
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SystemExit(f"pins.py: the pins file has no key {key!r}")
        node = node[part]
    return node


def constraints(pins: dict, target: str) -> dict[str, str]:
    """{distribution: PEP 440 specifier} for `target` (gpu or cpu)."""
    specs = dict(pins["image"]["requires"])
    if target == "gpu":
        specs["vllm"] = f"=={pins['image']['vllm']}"
    else:  # cpu: no vLLM, and the nearest CPU build of torch
        specs["torch"] = f"=={pins['cpu']['torch']}"
    return specs


def check(pins: dict, target: str) -> list[str]:
    """Print one line per pinned distribution; return what is outside the pins."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    problems = []
    for name, spec in constraints(pins, target).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (pinned {spec})")
            continue
        # A local version label (2.14.0+cu130) satisfies ==2.14.0, as pip itself accepts.
        ok = SpecifierSet(spec).contains(Version(installed), prereleases=True)
        print(f"  {name:<16} {installed:<16} {spec:<20} {'ok' if ok else 'OUTSIDE THE PINS'}")
        if not ok:
            problems.append(f"{name} {installed} is outside {spec}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pins", type=Path, default=PINS, help=f"default: {PINS}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("get").add_argument("key")
    for name in ("constraints", "check"):
        sub.add_parser(name).add_argument("--target", choices=("gpu", "cpu"), required=True)
    args = ap.parse_args(argv)
    pins = load(args.pins)

    if args.cmd == "get":
        print(get(pins, args.key))
    elif args.cmd == "constraints":
        for name, spec in constraints(pins, args.target).items():
            print(f"{name}{spec}")
    else:
        print(f"versions installed in {sys.executable} against {args.pins} ({args.target}):")
        problems = check(pins, args.target)
        if problems:
            print(
                f"pins.py: this Python does not match {args.pins} ({args.target}): "
                + "; ".join(problems)
                + ". Fix: install within the pins, or, if the base image moved to another vLLM "
                "release, update docker/pins.toml from that wheel's Requires-Dist.",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
