"""Publisher signatures of bundles, checked before anything in the bundle is parsed.

The format is OpenSSF model-signing's (1.1) for private-key signatures, written by `resnet-deploy sign`
(`export/signing.py`, with model-signing itself): `model.sig` in the bundle, a Sigstore bundle whose DSSE envelope
carries an in-toto statement listing the sha256 of every file of the bundle (manifest.json and each file it lists),
signed with an ECDSA P-256, P-384 or P-521 key. `reports/` (written later by `validate` and `bench`) and model.sig
itself are left out of it.

What a load with trusted keys checks, in this order: the trusted keys (ECDSA public keys); the signature over the
statement by one of them; manifest.json's bytes, read once, against the statement's digest (a signature of another
bundle fails here); then those same bytes are parsed, and the statement must list exactly manifest.json and the
files the manifest lists, with the manifest's sha256 for each; no other file may be in the bundle (but model.sig
and reports/), none listed may be missing or have another size. The model file a load then runs is read only as a
`VerifiedFile`, checked against the digest of this signed manifest, so the bytes a library parses are bytes the
publisher signed, each hashed once. `verify_signed_bundle` (`resnet-deploy verify`) also hashes every file.

Why not model-signing's own verifier at load: importing it takes about 430 ms here (it loads sigstore, TUF and
requests), as long as a ResNet-50's whole cold start, and it hashes every file by its path before the runtime reads
them again. This reader needs `cryptography` only (model-signing's own ECDSA code path), and the tests hold it to
model-signing's verifier on every hostile case.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.errors import BundleError, ResnetDeployError, first_line, quote
from resnet_deploy.runtime.manifest import (
    MANIFEST_NAME,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    REPORTS_DIR,
    SIGNATURE_NAME,
    Manifest,
    bundle_path,
    check_bundle_dir,
    parse_manifest,
    read_manifest,
    unlisted_files,
)
from resnet_deploy.runtime.verified import verify_files

INSTALL = "pip install 'resnet-deploy[signing]'"
# What model-signing 1.1 writes for a private-key signature (its _signing/sign_sigstore_pb.py and signing.py).
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
IGNORED = (SIGNATURE_NAME, REPORTS_DIR)  # what a signature leaves out, relative to the bundle
MAX_SIGNATURE_BYTES = 1 << 20  # a signature of a bundle's few files is about 2 kB
MAX_KEY_BYTES = 64 << 10
NEW_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out publisher.pem"


class SignatureError(BundleError):
    """A bundle is unsigned, signed by a key not trusted, or changed since it was signed."""


@dataclass(frozen=True)
class TrustedKey:
    """A publisher's public key: where it came from, the key, and model-signing's identifier of it (the sha256 of its
    PEM SubjectPublicKeyInfo, written in a signature as `publicKey.hint`)."""

    name: str
    key: Any  # cryptography's EllipticCurvePublicKey
    hint: str


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ResnetDeployError(f"checking bundle signatures needs the `cryptography` package: {INSTALL} (a device "
                                "that only verifies needs just `pip install cryptography`)") from None
    return serialization


def _key_kind(key: Any) -> str:
    curve = getattr(getattr(key, "curve", None), "name", None)
    size = getattr(key, "key_size", None)
    kind = type(key).__name__.removeprefix("_").replace("PublicKey", "").replace("PrivateKey", "")
    return f"EC {curve}" if curve else f"{kind}-{size}" if size else kind or "unknown"


def check_key_type(key: Any, name: str) -> None:
    """ResnetDeployError unless `key` (public or private) is an ECDSA key on a curve model-signing signs with."""
    curve = getattr(getattr(key, "curve", None), "name", None)
    if curve not in CURVES:
        raise ResnetDeployError(f"key {quote(name)} is a {_key_kind(key)} key; bundle signatures use ECDSA keys on "
                                f"{', '.join(CURVES.values())} (make one: {NEW_KEY})")


def load_trusted_keys(keys: Sequence[str | Path] | str | Path) -> list[TrustedKey]:
    """The public keys in these PEM files, each checked to be an ECDSA key of a supported curve; a one-line
    ResnetDeployError names the first that is not (missing, a private key, another type). An empty list is refused:
    it would otherwise mean "trust nothing" and "check nothing" at once."""
    serialization = _crypto()
    paths = [keys] if isinstance(keys, (str, Path)) else list(keys)
    if not paths:
        raise ResnetDeployError("no trusted keys given: name at least one publisher's public key (PEM), or none at "
                                "all to load without checking signatures")
    out = []
    for path in paths:
        name = str(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_KEY_BYTES + 1)
        except (OSError, TypeError) as e:
            raise ResnetDeployError(f"cannot read trusted key {quote(name)} "
                                    f"({getattr(e, 'strerror', None) or first_line(e)})") from None
        if b"PRIVATE KEY" in data:
            raise ResnetDeployError(f"trusted key {quote(name)} holds a private key; give its public half "
                                    "(openssl ec -in PRIVATE.pem -pubout -out PUBLIC.pem) and keep the private one "
                                    "off devices")
        try:
            if len(data) > MAX_KEY_BYTES:
                raise ValueError(f"over {MAX_KEY_BYTES >> 10} kB")
            key = serialization.load_pem_public_key(data)
        except Exception as e:  # cryptography raises ValueError, and UnsupportedAlgorithm for unknown key types
            why = first_line(e)[:120]
            raise ResnetDeployError(f"trusted key {quote(name)} is not a PEM public key ({why})") from None
        check_key_type(key, name)
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        out.append(TrustedKey(name, key, hashlib.sha256(pem).hexdigest()))
    return out


def _read_bundle_file(bundle: Path, rel: str, limit: int) -> bytes:
    """The bytes of `bundle/rel`, a regular file inside the bundle of at most `limit` bytes, read through one
    descriptor opened without following a final link."""
    real = bundle_path(bundle, rel)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise  # the callers say what a missing file means
    except OSError as e:
        raise BundleError(f"bundle file {quote(rel)} cannot be opened ({e.strerror})") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"bundle file {quote(rel)} is not a regular file; refused")
        if st.st_size > limit:
            raise BundleError(f"bundle file {quote(rel)} is over {limit >> 10} kB; not one `resnet-deploy export` "
                              "or `sign` writes")
        return f.read(limit + 1)


def _pae(payload: bytes) -> bytes:
    # DSSE's pre-authentication encoding (secure-systems-lab/dsse protocol.md), what the ECDSA signature covers
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def _damaged(why: str) -> SignatureError:
    return SignatureError(f"signature file {SIGNATURE_NAME} is damaged or not a model-signing signature ({why}); "
                          "sign the bundle again")


def _envelope(data: bytes) -> tuple[bytes, bytes, str]:
    """(payload, DER signature, key hint) of a model-signing signature file."""
    try:
        doc = json.loads(data.decode("utf-8"))
        envelope = doc["dsseEnvelope"]
        signatures = envelope["signatures"]
        if doc["mediaType"] != BUNDLE_MEDIA_TYPE or envelope["payloadType"] != PAYLOAD_TYPE:
            raise _damaged(f"media type {quote(doc['mediaType'], 80)}, payload {quote(envelope['payloadType'], 80)}")
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise _damaged("expected one signature in its envelope")
        payload = base64.b64decode(envelope["payload"], validate=True)
        der = base64.b64decode(signatures[0]["sig"], validate=True)
        hint = ((doc.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint") or ""
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, binascii.Error) as e:
        raise _damaged(f"{type(e).__name__}: {first_line(e)[:80]}" if str(e) else type(e).__name__) from None
    return payload, der, str(hint)


def _signer(payload: bytes, der: bytes, hint: str, keys: list[TrustedKey], bundle: Path) -> TrustedKey:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    digests = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}  # model-signing's hash per curve
    for trusted in sorted(keys, key=lambda k: k.hint != hint):  # the key the signature names first
        try:
            trusted.key.verify(der, _pae(payload), ec.ECDSA(digests[trusted.key.curve.key_size]()))
            return trusted
        except InvalidSignature:
            continue
    named = f"it names key sha256:{hint[:16]}" if hint else "it names no key"
    raise SignatureError(f"{bundle} is not signed by a trusted key ({named}; trusted: "
                         f"{', '.join(f'{k.name} (sha256:{k.hint[:16]})' for k in keys)})")


def _statement(payload: bytes) -> dict[str, str]:
    """{file name: sha256} of a signed in-toto statement, checked as model-signing checks it (its root digest over
    the listed digests included)."""
    try:
        s = json.loads(payload.decode("utf-8"))
        if s["_type"] != STATEMENT_TYPE or s["predicateType"] != PREDICATE_TYPE:
            raise ValueError(f"statement {quote(s['_type'], 60)} / {quote(s['predicateType'], 60)}")
        serialization, resources = s["predicate"]["serialization"], s["predicate"]["resources"]
        if serialization["method"] != "files" or serialization["hash_type"] != "sha256":
            raise ValueError(f"serialization {quote(serialization['method'], 30)} with "
                             f"{quote(serialization['hash_type'], 30)}; bundles are signed by file with sha256")
        if not isinstance(resources, list) or not 0 < len(resources) <= MAX_FILES + 1:
            raise ValueError(f"expected 1 to {MAX_FILES + 1} files")
        files, root = {}, hashlib.sha256()
        for r in resources:
            name, digest = r["name"], r["digest"]
            if r["algorithm"] != "sha256" or not isinstance(name, str) or name in files:
                raise ValueError(f"file entry {quote(name, 80)}")
            root.update(bytes.fromhex(digest))
            files[name] = digest.lower()
        subjects = s["subject"]
        if len(subjects) != 1 or subjects[0]["digest"]["sha256"] != root.hexdigest():
            raise ValueError("its root digest does not match the files it lists")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise SignatureError(f"the signed statement of {SIGNATURE_NAME} is not one `resnet-deploy sign` writes "
                             f"({first_line(e)[:160]}); sign the bundle again") from None
    return files


@dataclass(frozen=True)
class SignedBundle:
    """A bundle whose signature checked out: its manifest (parsed from the signed bytes) and who signed it."""

    manifest: Manifest
    signer: TrustedKey
    files: dict[str, str]  # {path: sha256} as signed


def check_signature(bundle: str | Path, trusted_keys: Sequence[str | Path] | str | Path) -> SignedBundle:
    """Check `bundle`'s signature against `trusted_keys` and parse its manifest from the bytes the signature covers
    (module docstring: what is checked, in which order). SignatureError (a BundleError) names the first failure;
    ResnetDeployError a bad key."""
    keys = load_trusted_keys(trusted_keys)
    bundle = Path(bundle)
    try:
        signature = _read_bundle_file(bundle, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise SignatureError(f"{bundle} is not signed: it has no {SIGNATURE_NAME} (the publisher signs it with "
                             "`resnet-deploy sign BUNDLE --key PRIVATE.pem`)") from None
    try:
        manifest_bytes = _read_bundle_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME}") from None
    payload, der, hint = _envelope(signature)
    signer = _signer(payload, der, hint, keys, bundle)
    files = _statement(payload)
    if files.get(MANIFEST_NAME) != hashlib.sha256(manifest_bytes).hexdigest():
        raise SignatureError(f"{MANIFEST_NAME} of {bundle} is not the one signed: it changed after signing, or "
                             f"{SIGNATURE_NAME} is another bundle's signature")
    manifest = parse_manifest(bundle, manifest_bytes)
    _check_files(bundle, manifest, files)
    return SignedBundle(manifest, signer, files)


def _check_files(bundle: Path, manifest: Manifest, files: dict[str, str]) -> None:
    listed = {f.path: f for f in manifest.files}
    extra = sorted(set(files) - set(listed) - {MANIFEST_NAME})
    if extra:
        raise SignatureError(f"the signature covers {quote(extra[0])}, which {MANIFEST_NAME} does not list; sign "
                             "the bundle again")
    for entry in manifest.files:
        if files.get(entry.path) != entry.sha256:
            raise SignatureError(f"{MANIFEST_NAME} lists {quote(entry.path)} with "
                                 f"{'another digest than' if entry.path in files else 'no digest in'} the "
                                 "signature; sign the bundle again")
    added = unlisted_files(bundle, manifest)
    if added:
        more = f" and {len(added) - 1} more" if len(added) > 1 else ""
        raise SignatureError(f"{bundle} holds {quote(added[0])}{more}, which the signature does not cover (added "
                             "after signing); remove it, or have the publisher sign the bundle with it")
    for entry in manifest.files:
        try:
            size = bundle_path(bundle, entry.path).stat().st_size
        except FileNotFoundError:
            raise SignatureError(f"bundle file {quote(entry.path)} is missing (removed after signing)") from None
        if size != entry.size:
            raise SignatureError(f"bundle file {quote(entry.path)} has {size} bytes where the signed manifest lists "
                                 f"{entry.size}: it changed after signing")


def open_manifest(bundle: str | Path, trusted_keys: Sequence[str | Path] | str | Path | None = None) -> Manifest:
    """The manifest every loader reads: `read_manifest(bundle)`, or with `trusted_keys` (PEM public key files) the
    signature checked first and the manifest parsed from the very bytes it covers; a bundle not signed by one of
    them is a SignatureError."""
    if trusted_keys is None:
        return read_manifest(bundle)
    return check_signature(check_bundle_dir(bundle), trusted_keys).manifest


def verify_signed_bundle(bundle: str | Path, trusted_keys: Sequence[str | Path] | str | Path) -> SignedBundle:
    """`check_signature`, then every file hashed against the signed manifest (each checksum it lists): the whole
    check `resnet-deploy verify` runs."""
    signed = check_signature(bundle, trusted_keys)
    try:
        verify_files(bundle, signed.manifest)
    except BundleError as e:
        raise SignatureError(str(e)) from None
    return signed
