"""Suite-wide checks: every manifest a test writes through the project's writer is checked against
docs/manifest.schema.json, the contract for readers in other languages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


def manifest_validator():
    """A jsonschema validator of docs/manifest.schema.json, or None (with the reason) when jsonschema is missing."""
    try:
        import jsonschema
    except ImportError:
        return None
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(autouse=True, scope="session")
def _manifests_follow_the_schema():
    from resnet_deploy.runtime.manifest import Manifest

    validator = manifest_validator()
    if validator is None:  # the dev extra installs it; without it the schema test itself skips with the reason
        yield
        return
    to_dict = Manifest.to_dict

    def checked(self):
        d = to_dict(self)
        errors = sorted(validator.iter_errors(json.loads(json.dumps(d))), key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"manifest does not follow docs/manifest.schema.json: {errors[0].message} at "
                                 f"{'/'.join(map(str, errors[0].path))}")
        return d

    Manifest.to_dict = checked
    try:
        yield
    finally:
        Manifest.to_dict = to_dict
