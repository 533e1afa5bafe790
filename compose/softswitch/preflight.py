"""The `preflight` service of compose/: refuse unusable secrets, then render the configs.

Runs once before every other service of the compose deployment (they depend on its success):

1. every secret of ``.env`` (``SECRET_NAMES``) must be set, must not be the ``CHANGE_ME``
   placeholder of ``.env.example``, must have at least 16 characters and only URL-safe ones
   (the database and broker passwords sit inside URLs, the tokens inside Kamailio defines);
2. the softswitch settings must load (in production they refuse short ARI/AMI/JSON-RPC
   secrets and the guest broker account themselves);
3. ``kamailio_cfg/`` and ``asterisk_cfg/`` are rendered with ``softswitch.stack.render``, the
   local stack's renderer and template values, into ``TARGET/kamailio`` and
   ``TARGET/asterisk``: the volumes the Kamailio and Asterisk containers read.

Exit status 0 when rendered, 78 (EX_CONFIG) when a secret or a setting is refused.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SECRET_NAMES = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "ARI_PASSWORD",
    "AMI_PASSWORD",
    "KAMAILIO_JSONRPC_TOKEN",
    "ASTERISK_PEER_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
)
PLACEHOLDER = "CHANGE_ME"
MIN_SECRET_LENGTH = 16
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
EX_CONFIG = 78
# Template folder -> folder under TARGET (the paths render.py's values point Asterisk at).
TREES = (("kamailio_cfg", "kamailio"), ("asterisk_cfg", "asterisk"))


def secret_problems(environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the secrets in ``environ``; values are never echoed."""
    problems = []
    for name in SECRET_NAMES:
        value = environ.get(name, "")
        if not value:
            problems.append(f"{name} is not set")
        elif PLACEHOLDER in value:
            problems.append(f"{name} is still the {PLACEHOLDER} placeholder")
        elif len(value) < MIN_SECRET_LENGTH:
            problems.append(f"{name} is shorter than {MIN_SECRET_LENGTH} characters")
        elif not _URL_SAFE.fullmatch(value):
            problems.append(f"{name} has characters other than A-Z a-z 0-9 . _ ~ -")
    return problems


def render(templates: Path, target: Path) -> list[str]:
    """Render both template trees from the settings; returns the trees that changed."""
    from softswitch.settings import load_settings
    from softswitch.stack.render import render_tree, template_values

    values = template_values(load_settings())
    return [
        name for source, name in TREES if render_tree(templates / source, target / name, values)
    ]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", type=Path, required=True, help="e.g. /etc/softswitch")
    parser.add_argument(
        "--templates",
        type=Path,
        default=Path("/opt/softswitch"),
        help="folder holding kamailio_cfg/ and asterisk_cfg/",
    )
    args = parser.parse_args(argv)
    problems = secret_problems(os.environ if environ is None else environ)
    if problems:
        for problem in problems:
            print(f"preflight: {problem}", file=sys.stderr)
        print(
            "preflight: refusing to start; generate secrets with `openssl rand -hex 16`"
            " (see compose/.env.example)",
            file=sys.stderr,
        )
        return EX_CONFIG
    try:
        changed = render(args.templates, args.target)
    except ValueError as exc:  # pydantic's ValidationError and render's TemplateError
        print(f"preflight: invalid settings: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(f"preflight: configs rendered into {args.target} (changed: {changed or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
