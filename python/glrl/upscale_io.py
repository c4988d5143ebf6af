"""Reading and writing the images that ``glrl upscale`` works on, as float planes in [0, 1].

Why a module of its own: upscaling takes whatever people have (grey, RGB, palette, with alpha, 8- or
16-bit, rotated by an EXIF tag, tagged with a colour profile) and must give back the same kind of image,
bigger. Evaluation reads only the benchmark sets and needs none of this.

A :class:`Picture` is an H×W×C float64 array in [0, 1], C = 1 (grey), 2 (grey + alpha), 3 (RGB) or
4 (RGBA), plus its bit depth (8 or 16) so the result is written back at the same depth. Pillow reads and
writes everything except 16-bit colour, which Pillow reduces to 8 bits; that goes through OpenCV when it is
installed and is refused with a clear message otherwise.

An embedded ICC profile (a camera's Adobe RGB, a phone's Display P3) says what the pixel values mean; the net
changes the values, not their colour space, so the profile is written back with the result wherever the
output format can hold one (PNG, JPEG, TIFF, WebP; 16-bit colour only as PNG). Without it a colour-managed
viewer would take the result for sRGB and shift its colours. A profile of CMYK, Lab and the like goes: those
pixels are converted to RGB on reading and the profile no longer describes them.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from glrl.errors import DataError
from glrl.matlab_compat import im2uint8
from glrl.fsutil import atomic_write_bytes

SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")  # the Pillow formats that store 16-bit grey
EXIF_ORIENTATION = 0x0112
ANIMATION_FORMATS = ("GIF", "PNG", "WEBP")  # Pillow opens their first frame only
PROFILE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")  # the Pillow formats that store an ICC profile
PNG_HEADER_BYTES = 8 + 25  # the signature and the IHDR chunk, which other chunks follow


@dataclass
class Picture:
    """An image as float planes in [0, 1] (H×W×C), the bit depth it came with (8 or 16) and the ICC colour
    profile it carried, if any."""

    pixels: np.ndarray
    bit_depth: int = 8
    icc_profile: Optional[bytes] = None

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def is_colour(self) -> bool:
        return self.pixels.shape[2] in (3, 4)


def array_to_picture(array: np.ndarray) -> Tuple[Picture, np.dtype, bool]:
    """Check an API array (H×W or H×W×C; uint8, uint16 or float in [0, 1]) and convert it.

    Returns the picture, the dtype to give back and whether the input was 2-D.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise DataError(f"an image must be H×W or H×W×C with C in 1..4 (grey, grey+alpha, RGB, RGBA), "
                        f"not shape {array.shape}")
    if min(array.shape[:2]) < 1:
        raise DataError(f"the image of shape {array.shape} has no pixels")
    planes = array[:, :, None] if array.ndim == 2 else array
    if array.dtype == np.uint8:
        picture = Picture(planes.astype(np.float64) / 255.0, 8)
    elif array.dtype == np.uint16:
        picture = Picture(planes.astype(np.float64) / 65535.0, 16)
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(planes).all()
        if not finite or planes.min() < 0.0 or planes.max() > 1.0:
            raise DataError("a floating-point image must hold values in [0, 1]",
                            hint="divide 8-bit values by 255 (or pass the uint8 array itself)")
        picture = Picture(planes.astype(np.float64), 8)
    else:
        raise DataError(f"images of dtype {array.dtype} are not supported",
                        hint="pass uint8, uint16 or a float array in [0, 1]")
    return picture, array.dtype, array.ndim == 2


def picture_to_array(picture: Picture, dtype: np.dtype, two_d: bool) -> np.ndarray:
    """Quantise a picture to ``dtype`` (round to nearest; floats are clipped to [0, 1])."""
    pixels = np.clip(picture.pixels, 0.0, 1.0)
    if dtype == np.uint8:
        out = im2uint8(pixels)
    elif dtype == np.uint16:
        out = np.floor(pixels * 65535.0 + 0.5).astype(np.uint16)
    else:
        out = pixels.astype(dtype)
    return out[:, :, 0] if two_d else out


def _pillow():
    from PIL import Image, ImageOps
    return Image, ImageOps


def _is_sixteen_bit_colour(img) -> bool:
    from glrl.imageio import stored_sample_layout

    return img.mode in ("RGB", "RGBA") and ";16" in stored_sample_layout(img)


def read_picture(path: Path) -> Picture:
    """Read an image file, turned upright by its EXIF orientation, as a :class:`Picture`."""
    Image, ImageOps = _pillow()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no image file {path}", hint="check the path")
    try:
        with Image.open(path) as img:
            if getattr(img, "is_animated", False) and img.format in ANIMATION_FORMATS:
                raise DataError(f"{path} is an animation ({img.n_frames} frames); glrl enlarges still images",
                                hint="extract the frames (e.g. ffmpeg -i in.gif frames/%04d.png), enlarge the "
                                     "folder and assemble them again")
            profile = img.info.get("icc_profile") or None
            if _is_sixteen_bit_colour(img):
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                return _read_sixteen_bit_colour(path, orientation, profile)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pillow_to_picture(img, path, profile)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {path}: {exc}",
                        hint="cut the image into parts and enlarge each (Pillow refuses images this large)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}",
                        hint="the file is not an image or is damaged; re-export it (PNG, JPEG, TIFF, WebP)",
                        ) from exc


def _pillow_to_picture(img, path: Path, profile: Optional[bytes]) -> Picture:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"{path} holds 32-bit integer pixels, which upscale does not support",
                            hint="convert it to 8- or 16-bit first")
        return Picture(values[:, :, None].astype(np.float64) / 65535.0, 16, profile)
    if mode == "F":
        raise DataError(f"{path} holds 32-bit float pixels, which upscale does not support",
                        hint="convert it to 8- or 16-bit first")
    if mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        profile = None  # it described the pixels before the conversion
    planes = np.asarray(img)
    if planes.ndim == 2:
        planes = planes[:, :, None]
    return Picture(planes.astype(np.float64) / 255.0, 8, profile)


def _opencv():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _read_sixteen_bit_colour(path: Path, orientation: int, profile: Optional[bytes]) -> Picture:
    cv2 = _opencv()
    if cv2 is None:
        raise DataError(f"{path} is a 16-bit colour image; reading those needs OpenCV",
                        hint="pip install opencv-python-headless, or convert the image to 8 bits")
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3:
        raise DataError(f"cannot read the 16-bit colour image {path}", hint="re-export it")
    order = [2, 1, 0, 3][: bgr.shape[2]]
    rgb = _apply_orientation(bgr[:, :, order], orientation)
    return Picture(rgb.astype(np.float64) / 65535.0, 16, profile)


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array upright by EXIF orientation 1..8 (what Pillow's exif_transpose does)."""
    if orientation in (2, 4, 5, 7):
        pixels = pixels[:, ::-1]
    turns = {3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(orientation, 0)
    return np.ascontiguousarray(np.rot90(pixels, turns))


def output_format(path: Path) -> str:
    """The Pillow format name for ``path``'s extension, or a DataError naming the extension."""
    Image, _ = _pillow()
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise DataError(f"cannot tell an image format from the extension of {path}",
                        hint="end the output name with .png, .jpg, .bmp, .tif or .webp")
    return fmt


def encode_picture(picture: Picture, fmt: str, ext: str) -> bytes:
    """The file bytes of ``picture`` in Pillow format ``fmt`` (16-bit kept where the format allows)."""
    Image, _ = _pillow()
    channels = picture.pixels.shape[2]
    sixteen = picture.bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS
    if sixteen and channels != 1:
        return _encode_sixteen_bit_colour(picture, ext)
    if sixteen:
        plane = picture_to_array(picture, np.dtype(np.uint16), True)
        img = Image.fromarray(plane)
    else:
        planes = picture_to_array(picture, np.dtype(np.uint8), False)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        img = Image.fromarray(planes[:, :, 0] if channels == 1 else planes, mode)
    options = {"quality": 95} if fmt == "JPEG" else {}
    if picture.icc_profile and fmt in PROFILE_FORMATS:
        options["icc_profile"] = picture.icc_profile
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        hint = "choose .png, .tif or .webp to keep the alpha channel" if picture.has_alpha else None
        raise DataError(f"cannot store this image as {fmt}: {exc}", hint=hint) from exc
    return buffer.getvalue()


def _encode_sixteen_bit_colour(picture: Picture, ext: str) -> bytes:
    cv2 = _opencv()
    if cv2 is None:
        raise DataError("writing 16-bit colour images needs OpenCV",
                        hint="pip install opencv-python-headless")
    rgb = picture_to_array(picture, np.dtype(np.uint16), False)
    order = [2, 1, 0, 3][: rgb.shape[2]]
    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, order]))
    if not ok:
        raise DataError(f"OpenCV cannot encode a 16-bit colour image as {ext}", hint="use .png or .tif")
    if picture.icc_profile and ext == ".png":  # OpenCV writes no profile; PNG keeps it in an iCCP chunk
        return png_with_chunk(data.tobytes(), b"iCCP", b"ICC Profile\0\0" + zlib.compress(picture.icc_profile))
    return data.tobytes()


def png_with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """``png`` with one more chunk of ``kind`` right after its header, where iCCP and eXIf may stand."""
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:PNG_HEADER_BYTES] + chunk + png[PNG_HEADER_BYTES:]


def check_encodable(picture: Picture, path: Path) -> None:
    """Fail before any computing if ``path``'s format cannot store ``picture``'s kind of pixels (alpha as
    JPEG, say): a one-pixel crop of it is encoded the way the result will be."""
    corner = Picture(picture.pixels[:1, :1], picture.bit_depth, picture.icc_profile)
    encode_picture(corner, output_format(path), Path(path).suffix.lower())


def write_picture(path: Path, picture: Picture) -> None:
    """Write ``picture`` to ``path`` atomically, in the format its extension names."""
    path = Path(path)
    data = encode_picture(picture, output_format(path), path.suffix.lower())
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}",
                        hint="choose an output folder you can write to") from exc


def check_writable(path: Path) -> None:
    """Fail early (before any computing) if ``path`` cannot be created or replaced."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.is_dir():
        raise DataError(f"the output {path} is a folder", hint="give a file name such as out.png")
    if not folder.is_dir() or not os.access(str(folder), os.W_OK | os.X_OK):
        raise DataError(f"cannot write {path}: permission denied or not a folder",
                        hint="choose an output folder you can write to")
