"""wwbl.images: loading every kind of image users pass, tensors, heatmap resizing."""
import numpy as np
import pytest
import torch
from PIL import Image

from wwbl.errors import ImageLoadError
from wwbl.images import as_tensor01, load_image, resize_heatmap, to_tensor01, working_copy, working_size


def test_grayscale_becomes_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L").save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (7, 5)
    assert np.asarray(img)[0, 0].tolist() == [100, 100, 100]


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "a.png"
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = np.asarray(load_image(path))
    assert arr[0, 0].tolist() == [255, 0, 0]
    assert arr[3, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_is_rescaled(tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(path)
    arr = np.asarray(load_image(path))
    assert arr.dtype == np.uint8 and arr.max() == 255


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "r.jpg"
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_palette_image(tmp_path):
    path = tmp_path / "p.png"
    Image.new("P", (6, 6), 3).save(path)
    assert load_image(path).mode == "RGB"


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_corrupt_files_raise_named_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_image(path)


def test_missing_and_tiny_images(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "none.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(tmp_path / "tiny.png")


def test_to_tensor01_from_each_kind():
    arr = np.zeros((3, 5, 3), np.uint8)
    arr[..., 1] = 255
    t = to_tensor01(arr)
    assert t.shape == (3, 3, 5) and t[1].min() == 1.0 and t[0].max() == 0.0
    assert torch.equal(to_tensor01(Image.fromarray(arr)), t)
    assert torch.equal(as_tensor01(t), t)
    rgba = torch.rand(4, 5, 5)
    assert torch.equal(to_tensor01(rgba), rgba[:3])  # alpha dropped, as for H×W×4 arrays
    with pytest.raises(ImageLoadError):
        to_tensor01(torch.rand(2, 5, 5))


def test_every_kind_of_array_and_tensor_users_pass():
    gray8 = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    expected = torch.from_numpy(gray8.astype(np.float32) / 255)[None].expand(3, -1, -1)
    assert torch.allclose(to_tensor01(gray8), expected)  # H×W gray
    assert torch.allclose(to_tensor01(gray8[..., None]), expected)  # H×W×1
    assert torch.allclose(to_tensor01(gray8.astype(np.int64)), expected)  # integers in 0..255
    assert torch.allclose(to_tensor01(gray8.astype(np.uint16) * 257), expected, atol=1e-6)  # 16 bit
    assert torch.allclose(to_tensor01(torch.from_numpy(gray8)[None]), expected)  # 1×H×W uint8 tensor
    rgb8 = np.stack([gray8, 255 - gray8, gray8 // 2], axis=-1)
    read_image_like = torch.from_numpy(rgb8).permute(2, 0, 1).contiguous()  # torchvision.io.read_image
    assert torch.allclose(to_tensor01(read_image_like), to_tensor01(rgb8))
    mask = np.zeros((12, 10), bool)
    mask[2:5, 3:7] = True
    assert to_tensor01(mask)[:, 3, 4].tolist() == [1.0, 1.0, 1.0] and to_tensor01(mask)[0, 0, 0] == 0.0
    assert torch.allclose(to_tensor01(rgb8.astype(np.float64) / 255), to_tensor01(rgb8))


@pytest.mark.parametrize("bad, message", [
    (np.full((12, 10, 3), 200.0), "divide 0–255 values by 255"),  # floats in 0..255
    (np.full((12, 10, 3), np.nan), "NaN"),
    (np.full((12, 10), 300, np.int32), "0, 255"),
    (np.zeros((12, 10, 3), np.complex64), "unsupported image dtype"),
    (np.zeros((3, 12, 10), np.uint8), "H×W×3"),  # a C×H×W array
    (torch.zeros(12, 10, 3), "permute it"),  # an H×W×C tensor
    (torch.zeros(3, 12, 10, dtype=torch.int64), "uint8 or float"),
    (np.zeros((0, 10, 3), np.uint8), "too small"),
    ([[0, 1], [1, 0]], "got list"),
])
def test_bad_images_are_refused_with_what_was_expected(bad, message):
    with pytest.raises(ImageLoadError, match=message):
        to_tensor01(bad)


def test_resize_heatmap_keeps_constant_maps_and_shape():
    maps = torch.full((2, 4, 6), 0.25)
    out = resize_heatmap(maps, (9, 13), align_corners=False)
    assert out.shape == (2, 9, 13) and torch.allclose(out, torch.full_like(out, 0.25))


def _png(width: int, height: int, extra_chunks: bytes = b"", pixels: bool = True) -> bytes:
    """A minimal 8-bit RGB PNG written by hand (so its chunks can be anything), extra chunks before IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height)) if pixels else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra_chunks + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind, payload_head", [(b"iCCP", b"profile\x00\x00"), (b"zTXt", b"Comment\x00\x00")])
def test_png_chunk_decompression_bombs_are_named_load_errors(tmp_path, kind, payload_head):
    import struct
    import zlib

    inflating = zlib.compress(b"\x00" * 30_000_000, 9)  # 30 MB from ~30 kB: past PIL's chunk limits
    data = payload_head + inflating
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(4, 4, chunk))
    with pytest.raises(ImageLoadError, match="bomb.png.*too large"):
        load_image(path)


def test_a_pixel_count_bomb_is_a_named_load_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png(20_000, 20_000, pixels=False))  # 400 MP declared: more than twice PIL's limit
    with pytest.raises(ImageLoadError, match="huge.png"):
        load_image(path)


@pytest.mark.parametrize("mode", ["1", "L", "P", "PA", "LA", "La", "RGBa", "CMYK", "YCbCr", "I", "F", "I;16",
                                  "I;16B", "RGBX", "HSV"])
def test_every_pil_mode_becomes_rgb(mode):
    image = Image.new(mode, (5, 4))
    tensor = to_tensor01(image)
    assert tensor.shape == (3, 4, 5) and 0 <= tensor.min() and tensor.max() <= 1


def test_premultiplied_alpha_is_composited_on_white():
    image = Image.new("La", (3, 3), (0, 0))  # black, fully transparent
    assert to_tensor01(image).min() == 1.0


@pytest.mark.parametrize("size, max_side, expected", [
    ((3200, 1000), 1600, (1600, 500)),  # longer side to max_side, aspect kept
    ((1000, 3200), 1600, (500, 1600)),
    ((100_000, 2), 1600, (1600, 2)),  # the short side would round to 0: kept at 2 pixels
    ((1600, 1200), 1600, (1600, 1200)),  # fits: unchanged
    ((9000, 12000), None, (9000, 12000)),  # no cap
])
def test_working_size(size, max_side, expected):
    assert working_size(size, max_side) == expected


def test_working_copy_downscales_only_what_is_too_large():
    small = Image.new("RGB", (40, 30))
    assert working_copy(small, 64) is small
    assert working_copy(Image.new("RGB", (128, 32), (10, 200, 30)), 64).size == (64, 16)
    assert np.asarray(working_copy(Image.new("RGB", (128, 32), (10, 200, 30)), 64))[8, 32].tolist() == [10, 200, 30]
