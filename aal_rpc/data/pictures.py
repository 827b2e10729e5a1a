"""Picture files as model inputs and as what people look at.

A picture becomes a float32 (C, H, W) tensor in [0, 1] at a chosen size: one channel when the whole pool is
grayscale, else RGB with transparency laid on white. People see the original file where a browser shows it and
it fits a message (types.MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS), else a rendering scaled down for display only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from aal_rpc.types import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, image_type

FOLDER_IMAGE_SIZE = 32  # pictures become FOLDER_IMAGE_SIZE x FOLDER_IMAGE_SIZE unless a task names its input size
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})  # more than 8 bits: scaled, not clipped
DISPLAY_SIZE = 1600  # a rendering for people fits this many pixels on its long side
DISPLAY_JPEG_QUALITY = 90
DISPLAY_PNG_PIXELS = 512 * 512  # renderings this small (or transparent) are PNG, larger ones JPEG
DECODE_THREADS = min(8, os.cpu_count() or 1)  # Pillow decodes and resizes without the GIL
DECODE_CHUNK = 256  # pictures handed to the threads at a time: bounds what is held undecoded


def render_png(x: np.ndarray) -> bytes:
    """A PNG of an image tensor ((H, W), (1, H, W) or (3, H, W), values in [0, 1]); b"" for anything else."""
    from PIL import Image

    if x.ndim == 3 and x.shape[0] in (1, 3):
        img = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    elif x.ndim == 2:
        img = x
    else:
        return b""
    arr = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def load_image(path: Path | str, *, input_size: tuple[int, int], channels: int) -> np.ndarray:
    """One picture file as the model's (channels, H, W) float32 input, prepared as the pool's pictures are."""
    return with_channels(read_picture(Path(path), str(path), input_size), channels)


def with_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(..., C, H, W) with C = 1 or 3 -> (..., channels, H, W): grayscale repeated, colour weighed to luminance."""
    if x.shape[-3] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-3)
    if channels == 1:
        luma = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert("L")
        return np.einsum("c,...chw->...hw", luma, x)[..., None, :, :]
    raise ValueError(f"pictures have 1 or 3 channels, not {channels}")


def read_picture(source: Path | bytes, where: str, input_size: tuple[int, int]) -> np.ndarray:
    """A picture file (a path or its bytes) -> (1, H, W) if grayscale else (3, H, W) float32 in [0, 1];
    ValueError naming `where` for anything Pillow cannot read to the end."""
    from PIL import Image

    h, w = input_size
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.draft(img.mode, (w, h))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still >= the size
            img = upright(img)
            gray = img.mode in GRAYSCALE_MODES
            if img.mode in WIDE_MODES:
                arr = np.asarray(img, dtype=np.float32)
                wide = img.mode.startswith("I;16") or arr.max(initial=0) > 255
                scaled = Image.fromarray(arr / (65535.0 if wide else 255.0))  # float32: mode F
                out = np.asarray(scaled.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32).clip(0.0, 1.0)
                return out[None]
            img = _on_white(img, "L" if gray else "RGB")
            out = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{where}: not a readable picture ({exc})") from None
    return out[None] if gray else out.transpose(2, 0, 1)


def upright(img):
    """The picture as a person sees it: turned by its EXIF orientation (a phone's photo is stored sideways with a
    tag that viewers and browsers apply), so the model learns from what annotators were shown."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img


def _on_white(img, mode: str):
    """The picture in `mode` ("L" or "RGB"), any transparency laid on a white background."""
    from PIL import Image

    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode not in ("RGBA", "LA", "La", "RGBa", "PA"):
        return img.convert(mode)
    alpha = img.getchannel("A")
    background = Image.new(mode, img.size, 255 if mode == "L" else (255, 255, 255))
    background.paste(img.convert(mode), mask=alpha)
    return background


def decode_pictures(items: Iterable[tuple[str, Path | bytes]], count: int,
                    input_size: tuple[int, int]) -> np.ndarray:
    """`count` pictures, each (where, path or bytes), -> (count, C, H, W) float32 in their order, C = 1 when
    every one is grayscale, else 3."""
    h, w = input_size
    out = np.empty((count, 3, h, w), np.float32)
    gray = True
    with ThreadPoolExecutor(DECODE_THREADS) as threads:
        row = 0
        for chunk in _chunks(iter(items), DECODE_CHUNK):
            for x in threads.map(lambda item: read_picture(item[1], item[0], input_size), chunk):
                out[row] = x  # a grayscale (1, H, W) fills all three channels, as with_channels does
                gray &= x.shape[0] == 1
                row += 1
    if row != count:
        raise ValueError(f"expected {count} pictures, read {row}")
    return np.ascontiguousarray(out[:, :1]) if gray and count else out


def _chunks(items: Iterator, n: int) -> Iterator[list]:
    while chunk := list(islice(items, n)):
        yield chunk


def display_picture(data: bytes, where: str) -> bytes:
    """What a person is shown for a picture file's bytes: the bytes themselves when a browser shows them and
    they fit the limits, else a rendering at most DISPLAY_SIZE pixels on its long side and MAX_IMAGE_BYTES."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if image_type(data) and len(data) <= MAX_IMAGE_BYTES and img.width * img.height <= MAX_IMAGE_PIXELS:
                return data
            img.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))  # drafts JPEGs, keeps the aspect ratio
            img = _displayable(upright(img))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{where}: not a readable picture ({exc})") from None
    while True:
        out = _encode(img)
        if len(out) <= MAX_IMAGE_BYTES or max(img.size) <= 16:
            return out
        img = img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)),
                         Image.Resampling.BILINEAR)


def enlarged_picture(data: bytes, size: int) -> bytes:
    """A small picture enlarged by the largest whole factor that keeps its long side at most `size` pixels, each
    pixel a block of the same colour (nearest neighbour), as PNG: a tool that stretches pictures to its panel then
    stretches it by little, and it stays crisp. A picture that no whole factor of 2 or more fits, or that cannot be
    read, is returned as it is (its type and limits were checked when it was submitted)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            factor = size // max(img.size)
            if factor < 2 or getattr(img, "n_frames", 1) > 1:  # large enough, or an animation
                return data
            shown = _displayable(upright(img))
            shown = shown.resize((shown.width * factor, shown.height * factor), Image.Resampling.NEAREST)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return data
    out = io.BytesIO()
    shown.save(out, format="PNG")
    return out.getvalue() if len(out.getvalue()) <= MAX_IMAGE_BYTES else data


def _displayable(img):
    """The picture in a mode PNG or JPEG stores: RGBA or LA where it is transparent, else RGB or L."""
    from PIL import Image

    if img.mode in WIDE_MODES:
        arr = np.asarray(img, dtype=np.float32)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray((arr / scale * 255.0).clip(0, 255).astype(np.uint8))  # uint8: mode L
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        return img
    if img.mode in ("La", "RGBa", "PA"):
        return img.convert("RGBA")
    return img.convert("L" if img.mode in GRAYSCALE_MODES else "RGB")


def _encode(img) -> bytes:
    buf = io.BytesIO()
    if img.mode in ("RGBA", "LA") or img.width * img.height <= DISPLAY_PNG_PIXELS:
        img.save(buf, format="PNG")
    else:
        img.save(buf, format="JPEG", quality=DISPLAY_JPEG_QUALITY)
    return buf.getvalue()
