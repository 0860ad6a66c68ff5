"""Signing a bundle with the publisher's private key: `resnet-deploy sign` and `export --sign-key`.

OpenSSF model-signing (the `signing` extra) hashes every file of the bundle (sha256, by file) but `model.sig` and
`reports/`, and signs the list with an ECDSA key; its signature file is written as `BUNDLE/model.sig`. What it covers
and how a device checks it: `runtime/signature.py`. The private key is read here and nowhere else: neither it nor
its path is written into the bundle (the signature names the public key by its sha256 only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.errors import ResnetDeployError, first_line, quote
from resnet_deploy.runtime.files import atomic_write_text
from resnet_deploy.runtime.manifest import (
    SIGNATURE_NAME,
    read_manifest,
    unlisted_files,
)
from resnet_deploy.runtime.signature import IGNORED, INSTALL, check_key_type, verify_signed_bundle
from resnet_deploy.runtime.verified import verify_files


def load_signing_key(key: str | Path) -> Any:
    """The private key in PEM file `key`, checked to be an ECDSA key model-signing signs with; a one-line
    ResnetDeployError otherwise (missing, encrypted, a public key, another type). Called before a long export, so
    that a bad key is found first."""
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ResnetDeployError(f"signing bundles needs the signing extra: {INSTALL}") from None
    try:
        data = Path(key).read_bytes()
    except OSError as e:
        raise ResnetDeployError(f"cannot read signing key {quote(str(key))} ({e.strerror})") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise ResnetDeployError(f"signing key {quote(str(key))} is encrypted; give an unencrypted PEM key (keep it "
                                "where only the publisher can read it)") from None
    except Exception as e:
        raise ResnetDeployError(f"signing key {quote(str(key))} is not a PEM private key "
                                f"({first_line(e)[:120]})") from None
    check_key_type(private, str(key))
    return private


def check_can_sign(key: str | Path) -> None:
    """ResnetDeployError unless `key` is a usable signing key and model-signing is installed: checked before a long
    export rather than found out after it."""
    load_signing_key(key)
    _model_signing()


def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError as e:  # model-signing 1.1.1 also fails here when pyopenssl, which it uses, is missing
        raise ResnetDeployError(f"signing bundles needs the signing extra ({first_line(e)[:80]}): {INSTALL}") from None
    return model_signing


def sign_bundle(bundle: str | Path, key: str | Path) -> Path:
    """Sign `bundle` in place with the private key in `key`: `bundle/model.sig`, replaced in one step.

    The bundle is checked first (every file against its manifest, no file the manifest does not list), and the new
    signature is checked with the key's public half, as a device will check it, before it replaces anything.

    Returns:
        the signature's path.
    """
    from cryptography.hazmat.primitives import serialization

    bundle = Path(bundle)
    private = load_signing_key(key)
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    extra = unlisted_files(bundle, manifest)
    if extra:
        raise ResnetDeployError(f"{bundle} holds {quote(extra[0])}, which its manifest does not list; remove it "
                                "before signing (a signature covers exactly the exported files)")
    model_signing = _model_signing()
    old = (bundle / SIGNATURE_NAME).read_text() if (bundle / SIGNATURE_NAME).is_file() else None
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-sign-") as tmp:
        hashing = model_signing.hashing.Config().set_ignored_paths(paths=list(IGNORED), ignore_git_paths=False)
        signing = model_signing.signing.Config().set_hashing_config(hashing)
        signing.use_elliptic_key_signer(private_key=Path(key)).sign(bundle, Path(tmp) / SIGNATURE_NAME)
        public = Path(tmp) / "public.pem"
        public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
        atomic_write_text(bundle / SIGNATURE_NAME, (Path(tmp) / SIGNATURE_NAME).read_text())
        try:  # as a device will check it: a signature that would not verify is not left in place
            verify_signed_bundle(bundle, [public])
        except ResnetDeployError as e:
            if old is None:
                (bundle / SIGNATURE_NAME).unlink(missing_ok=True)
            else:
                atomic_write_text(bundle / SIGNATURE_NAME, old)
            raise ResnetDeployError(f"the new signature of {bundle} does not verify ({e}); the bundle changed "
                                    "while it was signed, sign it again") from None
    return bundle / SIGNATURE_NAME
