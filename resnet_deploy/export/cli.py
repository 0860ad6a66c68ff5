"""The bundle-making commands of `resnet-deploy`: `export` (a checkpoint to a bundle), `sign` (a publisher signs a
bundle) and `verify` (a device checks one), registered on the main group as serve's and train's commands are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli_options import echo, export_options
from resnet_deploy.runtime.errors import ResnetDeployError


@click.command()
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Bundle directory to write.")
@click.option("--arch", help="Architecture of --weights (or a check of CHECKPOINT's), e.g. resnet50.")
@click.option("--weights", type=click.Path(dir_okay=False), help="torchvision state dict (.pth) instead of CHECKPOINT.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="Class names, one per line.")
@export_options
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (once the new one is complete).")
@click.option("--quiet", is_flag=True, help="Do not print the export log as it goes.")
@click.option("--sign-key", type=click.Path(path_type=str), metavar="PRIVATE.pem",
              help="Sign the bundle with this ECDSA private key (PEM; it is not written into the bundle). Needs the "
                   "signing extra.")
def export(checkpoint: str | None, out_dir: str, arch: str | None, weights: str | None, classes_file: str | None,
           force: bool, quiet: bool, sign_key: str | None, **options: Any) -> None:
    """Export CHECKPOINT (or --arch/--weights) to a bundle: fold BN, ONNX, FP16, INT8, TensorRT, manifest."""
    from resnet_deploy.export import ExportOptions, export_bundle

    opts = ExportOptions.from_flags(**{k: v for k, v in options.items() if v is not None})
    out = export_bundle(Path(out_dir), opts, checkpoint=checkpoint and Path(checkpoint), arch=arch,
                        weights=weights and Path(weights), classes=classes_file and Path(classes_file), force=force,
                        echo=None if quiet else (lambda line: echo(line, err=True)),
                        sign_key=sign_key and Path(sign_key))
    echo(f"bundle written to {out}" + (" and signed (model.sig)" if sign_key else ""))


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--key", required=True, type=click.Path(path_type=str), metavar="PRIVATE.pem",
              help="The publisher's ECDSA private key (PEM: P-256, P-384 or P-521).")
def sign(bundle: str, key: str) -> None:
    """Sign BUNDLE with the publisher's private key: BUNDLE/model.sig (OpenSSF model-signing format) covers
    manifest.json and every file it lists; reports/ is left out."""
    from resnet_deploy.export.signing import sign_bundle

    echo(f"signed {bundle}: {sign_bundle(bundle, key)}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--trusted-key", "trusted_keys", multiple=True, required=True, type=click.Path(path_type=str),
              metavar="PUBLIC.pem", help="A publisher's ECDSA public key (PEM); repeat to trust several.")
def verify(bundle: str, trusted_keys: tuple[str, ...]) -> None:
    """Check that BUNDLE is signed by one of the trusted keys and unchanged since: exit 0, else exit 1 with the
    reason."""
    from resnet_deploy.runtime.signature import verify_signed_bundle

    try:
        signed = verify_signed_bundle(bundle, list(trusted_keys))
    except ResnetDeployError as e:
        echo(f"FAIL: {e}", err=True)
        raise SystemExit(1) from None
    echo(f"OK: {bundle} is signed by {signed.signer.name} (sha256:{signed.signer.hint[:16]}); "
         f"{len(signed.files)} files verified")


def register(group: click.Group) -> None:
    """Add `export`, `sign` and `verify` to the `resnet-deploy` group."""
    for command in (export, sign, verify):
        group.add_command(command)
