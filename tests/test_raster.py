"""Reading raster windows: band choice, stretch, nodata, and clear errors for bad files."""
import numpy as np
import pytest
from rasterio.windows import Window

from engine_fixtures import ColorInterp, scene, utm_scene, write_raster
from ssjdn.core.errors import UserError
from ssjdn.core.geo.raster import full_window, raster_info, read_window_rgb


def test_rgb_uint8_window_is_read_unchanged(tmp_path):
    data = scene(64, 80)
    path = write_raster(tmp_path / "rgb.tif", data)
    info = raster_info(path)
    assert info.rgb_bands == (1, 2, 3) and info.stretch is None
    rgb = read_window_rgb(path, Window(10, 5, 30, 20))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 20, 30)
    np.testing.assert_array_equal(rgb, data[:, 5:25, 10:40])


def test_bands_are_chosen_by_colour_interpretation(tmp_path):
    data = scene(32, 32)
    bgr = data[::-1].copy()
    path = write_raster(tmp_path / "bgr.tif", bgr,
                        colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    assert raster_info(path).rgb_bands == (3, 2, 1)
    np.testing.assert_array_equal(read_window_rgb(path, Window(0, 0, 32, 32)), data)


def test_bands_are_chosen_by_description_when_interpretation_is_missing(tmp_path):
    data = np.zeros((4, 16, 16), np.uint16)
    path = write_raster(tmp_path / "bgrn.tif", data, descriptions=["Blue", "Green", "Red", "NIR"])
    assert raster_info(path).rgb_bands == (3, 2, 1)


def test_four_band_uint16_uses_first_three_bands_with_a_robust_stretch(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 3000, size=(4, 64, 64)).astype(np.uint16)
    data[0, 0, 0] = 65000  # one hot pixel must not squash the stretch
    path = write_raster(tmp_path / "multi.tif", data)
    info = raster_info(path)
    assert info.count == 4 and info.rgb_bands == (1, 2, 3)
    low, high = info.stretch[0]
    assert 1000 <= low < 1200 and 2800 < high <= 3000
    rgb = read_window_rgb(path, full_window(info))
    assert rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 255                                   # clipped, not wrapped
    assert rgb.min() == 0 and rgb.max() == 255                   # full contrast
    order = np.argsort(data[1].ravel())
    assert np.all(np.diff(rgb[1].ravel()[order].astype(int)) >= 0)  # monotonic


def test_band_override_and_impossible_bands(tmp_path):
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 40)])
    path = write_raster(tmp_path / "four.tif", data)
    rgb = read_window_rgb(path, Window(0, 0, 8, 8), bands="4,3,2")
    assert rgb[:, 0, 0].tolist() == [40, 30, 20]
    with pytest.raises(UserError, match="has 4 band"):
        raster_info(path, bands=(5, 1, 2))
    with pytest.raises(UserError, match="3 band numbers"):
        raster_info(path, bands=(1, 2))


def test_one_band_raster_is_shown_as_grey(tmp_path):
    grey = scene(32, 32)[0]
    path = write_raster(tmp_path / "grey.tif", grey)
    assert raster_info(path).rgb_bands == (1, 1, 1)
    rgb = read_window_rgb(path, Window(0, 0, 32, 32))
    for channel in rgb:
        np.testing.assert_array_equal(channel, grey)


def test_nodata_pixels_are_black_and_masked(tmp_path):
    data = scene(32, 32)
    data[:, :, :10] = 0
    path = write_raster(tmp_path / "nodata.tif", data, nodata=0)
    rgb, valid = read_window_rgb(path, Window(0, 0, 32, 32), with_mask=True)
    assert not valid[:, :10].any() and valid[:, 12:].any()
    assert (rgb[:, ~valid] == 0).all()


def test_float_nan_is_nodata_and_ignored_by_the_stretch(tmp_path):
    data = np.linspace(0.0, 1.0, 3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)
    data[:, :4, :] = np.nan
    path = write_raster(tmp_path / "float.tif", data)
    info = raster_info(path)
    assert all(np.isfinite(v) for pair in info.stretch for v in pair)
    rgb, valid = read_window_rgb(path, full_window(info), with_mask=True)
    assert not valid[:4].any() and valid[4:].all()


def test_decimated_read_gives_the_requested_size(tmp_path):
    path = utm_scene(tmp_path, rows=200, cols=300)
    assert read_window_rgb(path, Window(0, 0, 300, 200), out_size=(20, 30)).shape == (3, 20, 30)
    assert read_window_rgb(path, Window(0, 0, 300, 200), out_size=60).shape == (3, 40, 60)


def test_raster_without_crs_is_described_for_pixel_use(tmp_path):
    path = write_raster(tmp_path / "plain.tif", scene(40, 50), crs=None)
    info = raster_info(path)
    assert info.crs is None and info.bounds_wgs84 is None and info.pixel_size_m is None
    assert read_window_rgb(path, Window(0, 0, 50, 40)).shape == (3, 40, 50)


def test_corrupt_file_gives_a_user_error(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00" + b"\x13" * 500)
    with pytest.raises(UserError, match="damaged"):
        raster_info(path)


def test_truncated_geotiff_fails_on_read_with_a_user_error(tmp_path):
    path = utm_scene(tmp_path, rows=512, cols=512, block=128, compress="deflate")
    raw = open(path, "rb").read()
    info_before = raster_info(path)
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="damaged|truncated"):
        # The header survives, the second half of the pixel blocks does not.
        read_window_rgb(path, Window(0, 0, info_before.width, info_before.height))


def test_missing_file_and_folder_give_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        raster_info(tmp_path / "nope.tif")
    with pytest.raises(UserError, match="folder"):
        raster_info(tmp_path)


def test_window_outside_the_raster_is_refused(tmp_path):
    path = utm_scene(tmp_path, rows=32, cols=32)
    with pytest.raises(UserError, match="outside"):
        read_window_rgb(path, Window(100, 100, 10, 10))


def test_alpha_band_masks_pixels_and_is_not_shown(tmp_path):
    rgba = np.concatenate([scene(16, 16), np.full((1, 16, 16), 255, np.uint8)])
    rgba[3, :, :4] = 0  # transparent left strip
    path = write_raster(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES")
    assert raster_info(path).rgb_bands == (1, 2, 3)
    rgb, valid = read_window_rgb(path, Window(0, 0, 16, 16), with_mask=True)
    assert not valid[:, :4].any() and valid[:, 4:].all()
    np.testing.assert_array_equal(rgb[:, :, 4:], rgba[:3, :, 4:])
