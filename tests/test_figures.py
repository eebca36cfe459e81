"""The one image-grid writer (scripts/figures.py): x-first arrays drawn upright, as stored and as a viewer shows them,
in the benchmark's picture grid, the training grids and the inference overlays alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.transforms import LoadImage
from PIL import Image

from scripts.figures import GridColumn, grid_figure, slice_2d, upright, write_image_grid
from scripts.handlers import ImageGridWriter
from scripts.inference import overlay_png

ROWS, COLS = 4, 6  # a non-square radiograph: 4 pixel rows, 6 pixel columns


@pytest.fixture()
def stored(tmp_path):
    """A stored PNG matrix (rows, cols) with one bright pixel at the top right, and the bundle's loaded array."""
    matrix = np.zeros((ROWS, COLS), dtype=np.uint8)
    matrix[0, COLS - 1] = 255
    path = tmp_path / "top_right.png"
    Image.fromarray(matrix).save(path)
    loaded = np.asarray(LoadImage(reader="PILReader", image_only=True)(str(path)))
    return matrix, loaded


def test_loaded_arrays_are_x_first_and_upright_restores_the_stored_matrix(stored):
    matrix, loaded = stored
    assert loaded.shape == (COLS, ROWS) and loaded[COLS - 1, 0] == 255  # a[x, y]
    np.testing.assert_array_equal(upright(loaded), matrix)
    assert slice_2d(torch.as_tensor(loaded)[None]).shape == (COLS, ROWS)  # channel-first in, (W, H) out
    assert slice_2d(np.zeros((1, COLS, ROWS, 5))).shape == (COLS, ROWS)  # a volume: its middle slice


def test_grid_shows_every_column_upright(stored):
    matrix, loaded = stored
    image = loaded / 255.0
    mask = (loaded > 0).astype(float)
    fig = grid_figure(
        [GridColumn("image", [image], "image", contour=1.0), GridColumn("map", [2 * image + 1], "map")], [mask]
    )
    shown_image, shown_map = (ax.images[0].get_array() for ax in fig.axes)
    assert shown_image.shape == shown_map.shape == (ROWS, COLS)
    np.testing.assert_allclose(shown_image, matrix / 255.0)  # the bright pixel at the top right, as stored
    np.testing.assert_allclose(shown_map, matrix / 255.0)  # min-max scaled per image
    width, height = fig.get_size_inches()
    assert width > height  # a 4-row, 6-column image is drawn wider than tall


def test_benchmark_grid_training_grid_and_overlay_agree_on_orientation(stored, tmp_path):
    _, loaded = stored
    wide = np.kron(loaded / 255.0, np.ones((8, 8)))  # (48, 32) x-first: 32 rows, 48 columns
    write_image_grid(tmp_path / "grid.png", [GridColumn("image", [wide])])
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > im.size[1]  # PIL size is (width, height)

    writer = ImageGridWriter(str(tmp_path / "train"), num_images=1)
    engine = Engine(lambda e, b: None)
    engine.state.output = {"image": torch.as_tensor(wide)[None, None], "explanation": torch.as_tensor(wide)[None, None]}
    writer.collect(engine)
    engine.state.epoch = 1
    writer.write(engine)
    with Image.open(tmp_path / "train" / "epoch_001.png") as im:
        assert im.size[0] > im.size[1]

    overlay_png(loaded / 255.0, loaded / 255.0, tmp_path / "overlay.png")
    with Image.open(tmp_path / "overlay.png") as im:
        rgb = np.asarray(im)
    assert rgb.shape == (ROWS, COLS, 3) and rgb[0, COLS - 1].sum() > rgb[ROWS - 1, 0].sum()  # top right is bright
