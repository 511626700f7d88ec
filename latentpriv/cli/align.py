"""``latentpriv align``: FFHQ-align the face(s) of a photo (needs the ``face`` extra)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("align")
@click.argument("photo", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Aligned image (PNG recommended). With --all-faces: NAME_0.png, NAME_1.png, ...")
@click.option("--size", type=click.IntRange(16, 8192), default=1024, show_default=True,
              help="Output side in pixels (1024 for StyleGAN FFHQ; the generator's resolution).")
@click.option("--all-faces", is_flag=True, help="Align every face, one file per face, largest first.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (never the input photo).")
def align(photo: Path, output: Path, size: int, all_faces: bool, overwrite: bool) -> None:
    """Crop PHOTO the way FFHQ was cropped (dlib 68 landmarks -> eyes/mouth -> oriented square).

    StyleGAN FFHQ only reconstructs faces aligned like its training set: align photos before
    `latentpriv invert` (or use `invert --align`). The largest face is used unless --all-faces.

    Needs `pip install -e ".[face]"`. The 68-point landmark model was trained on iBUG 300-W, whose licence
    excludes commercial use.

    \b
    Examples:
      latentpriv align photo.jpg -o aligned.png          # 1024 px, for StyleGAN FFHQ
      latentpriv align face.png -o aligned.png --size 64 # a dcgan64 face (generate --model dcgan64), 64 px
      latentpriv align group.jpg -o face.png --all-faces # face_0.png, face_1.png, ... largest first
    """
    from latentpriv.faces.align import align_file

    for out in align_file(photo, output, size=size, all_faces=all_faces, overwrite=overwrite):
        click.echo(str(out))
