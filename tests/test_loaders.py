"""Dataset loaders (labkit.data.datasets): the toy-cat cache, image folders, the course layout,
and the errors each kind of bad input gives."""

import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image

import labkit.data.datasets as datasets
from labkit.config import get_config
from labkit.data.datasets import (DataError, ImageSet, load_course_dataset, load_dataset,
                             load_image_folder, read_gt_csv, toy_cats)

SMOKE = get_config("smoke", n_train=12, n_val=4, n_test=5)


def solid(colour, size=(12, 12), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def save(image: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def brush(size=64, seed=0) -> np.ndarray:
    """A (size, size) bool mask, True = missing: a few thick bars."""
    mask = np.zeros((size, size), bool)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        row = rng.integers(0, size - 6)
        mask[row:row + 5, rng.integers(0, size // 2):] = True
    return mask


def mask_png(mask: np.ndarray) -> Image.Image:
    """The course's encoding: black (0) = missing, white (255) = known."""
    return Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))


def course_tree(root, n_test=3, size=64, gt="csv", header=False, id_column=False,
                under_test=True):
    """A small course-layout dataset; returns (ground truth (n, S, S, 3), masks (n, S, S))."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            save(Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)),
                 root / split / f"{k:04d}.png")
    test = root / "test" if under_test else root
    truth = rng.integers(0, 256, (n_test, size, size, 3), np.uint8)
    masks = np.stack([brush(size, k) for k in range(n_test)])
    for k in range(n_test):
        masked = np.where(masks[k][..., None], 128, truth[k]).astype(np.uint8)
        save(Image.fromarray(masked), test / "masked_image" / f"{k:04d}.png")
        save(mask_png(masks[k]), test / "mask64" / f"{k:04d}.png")
        if gt == "png":
            save(Image.fromarray(truth[k]), test / "gt" / f"{k:04d}.png")
    if gt == "csv":
        write_csv(test / "gt.csv", truth, header=header,
                  ids=[f"{k:04d}" for k in range(n_test)] if id_column else None)
    return truth, masks


def write_csv(path, images, header=False, ids=None):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        n_values = images[0].size
        if header:
            writer.writerow((["id"] if ids else []) + [f"pixel{i}" for i in range(n_values)])
        for k, image in enumerate(images):
            writer.writerow(([ids[k]] if ids else []) + image.reshape(-1).tolist())


# ----------------------------------------------------------------------------- ImageSet

def test_image_set_tensors_masks_and_subset():
    images = np.arange(4 * 8 * 8 * 3, dtype=np.int64).reshape(4, 8, 8, 3).astype(np.uint8)
    masks = np.zeros((4, 8, 8), bool)
    masks[2, 1, 1] = True
    data = ImageSet(images, {"tilt": np.arange(4, dtype=np.float32)}, masks,
                    ["a", "b", "c", "d"], "test")
    x = data.tensors([2, 0])
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255)
    m = data.mask_tensors([2])
    assert m.shape == (1, 1, 8, 8) and m.dtype == torch.bool and m[0, 0, 1, 1] and m.sum() == 1
    part = data.subset([3, 1])
    assert len(part) == 2 and part.names == ["d", "b"] and part.labels["tilt"].tolist() == [3, 1]
    np.testing.assert_array_equal(part.masks, masks[[3, 1]])
    with pytest.raises(DataError, match="no fixed masks"):
        ImageSet(images, names=list("abcd")).mask_tensors()


# ----------------------------------------------------------------------------- toy cats

def test_toy_cat_splits_are_cached_and_reloaded_without_rendering(tmp_path, monkeypatch):
    test = toy_cats(SMOKE, "test", root=tmp_path, progress=False)
    path = tmp_path / "toycats-32" / "test-seed0-n5.npz"
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    assert test.images.shape == (5, 32, 32, 3) and test.masks.shape == (5, 32, 32)
    assert set(test.labels) == set(datasets.ATTRIBUTES)

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of loading the cache")
    monkeypatch.setattr(datasets, "render_cats", no_rendering)
    again = toy_cats(SMOKE, "test", root=tmp_path)
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.masks, test.masks)
    for name in test.labels:
        np.testing.assert_array_equal(again.labels[name], test.labels[name])
    assert again.names == test.names


def test_toy_cat_splits_are_distinct_and_only_test_has_masks(tmp_path):
    splits = load_dataset(SMOKE, cache_root=tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 4, 5]
    assert splits["train"].masks is None and splits["val"].masks is None
    train, val = splits["train"].images, splits["val"].images
    assert (np.abs(train[:4].astype(int) - val).mean((1, 2, 3)) > 5).all()
    other = toy_cats(SMOKE.replace(data_seed=1), "val", root=tmp_path, progress=False)
    assert (other.images != val).any()


@pytest.mark.parametrize("other", [dict(n_val=3), dict(data_seed=1), dict(image_size=16)],
                         ids=["fewer images", "another seed", "another size"])
def test_a_cache_that_does_not_hold_what_its_name_says_is_rendered_again(tmp_path, other):
    first = toy_cats(SMOKE, "val", root=tmp_path / "right", progress=False)
    made = toy_cats(SMOKE.replace(**other), "val", root=tmp_path / "other", progress=False)
    path = tmp_path / "right" / "toycats-32" / "val-seed0-n4.npz"
    (made_path,) = (tmp_path / "other").rglob("*.npz")
    path.write_bytes(made_path.read_bytes())                 # copied over, renamed, or mixed up
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))} holds .*, not the toycats:val "
                                         r"\(seed 1, 4 images of 32x32\) its name says; rendering it again"):
        again = toy_cats(SMOKE, "val", root=tmp_path / "right", progress=False)
    np.testing.assert_array_equal(again.images, first.images)
    assert len(made) != 4 or made.size != 32 or made.names != first.names
    assert toy_cats(SMOKE, "val", root=tmp_path / "right", progress=False).names == first.names


@pytest.mark.parametrize("damage", ["truncate", "old_version"])
def test_a_bad_cache_is_rendered_again(tmp_path, damage):
    first = toy_cats(SMOKE, "val", root=tmp_path, progress=False)
    path = tmp_path / "toycats-32" / "val-seed0-n4.npz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        with np.load(path) as data:
            arrays = dict(data)
        arrays["version"] = np.array([-1, -1])
        np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="rendering it again"):
        again = toy_cats(SMOKE, "val", root=tmp_path, progress=False)
    np.testing.assert_array_equal(again.images, first.images)


# ----------------------------------------------------------------------------- image folders

def test_image_folder_modes_and_formats(tmp_path):
    folder = tmp_path / "photos"
    save(solid((200, 30, 40)), folder / "a_rgb.png")
    save(solid((20, 120, 220)), folder / "b_jpeg.jpg", quality=95)
    save(solid(77, mode="L"), folder / "c_grey.png")
    rgba = solid((10, 200, 10, 255), mode="RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 12, 6))                 # top half transparent
    save(rgba, folder / "d_rgba.png")
    palette = solid((250, 200, 0)).convert("P", palette=Image.ADAPTIVE, colors=4)
    save(palette, folder / "e_palette.png")
    grey16 = Image.fromarray(np.full((12, 12), 65535, np.uint16))
    grey16.paste(32896, (0, 0, 12, 6))                      # 32896 / 257 = 128 exactly
    save(grey16, folder / "f_16bit.png")
    save(solid((5, 5, 5)), folder / "g_bitmap.bmp")
    save(solid((9, 99, 199)), folder / "h_web.webp", lossless=True)
    (folder / "notes.txt").write_text("not an image")

    data = load_image_folder(folder, 8)
    assert data.names == ["a_rgb.png", "b_jpeg.jpg", "c_grey.png", "d_rgba.png", "e_palette.png",
                          "f_16bit.png", "g_bitmap.bmp", "h_web.webp"]
    assert data.images.shape == (8, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.labels == {} and data.masks is None
    img = dict(zip(data.names, data.images.astype(int)))
    assert (img["a_rgb.png"] == (200, 30, 40)).all()
    assert (np.abs(img["b_jpeg.jpg"] - (20, 120, 220)) <= 6).all()
    assert (img["c_grey.png"] == 77).all()
    assert (img["d_rgba.png"][0] == 255).all()              # transparent -> white
    assert (img["d_rgba.png"][-1] == (10, 200, 10)).all()
    assert (img["e_palette.png"] == (250, 200, 0)).all()
    assert (img["f_16bit.png"][0] == 128).all() and (img["f_16bit.png"][-1] == 255).all()
    assert (img["h_web.webp"] == (9, 99, 199)).all()


def test_palette_transparency_is_composited_on_white(tmp_path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.paste(1, (0, 4, 8, 8))
    save(palette, tmp_path / "p.png", transparency=0)       # palette index 0 is transparent
    image = load_image_folder(tmp_path, 8).images[0].astype(int)
    assert (image[:4] == 255).all() and (image[4:] == (200, 0, 0)).all()


def test_32bit_integer_mode_is_read_as_16_bit():
    # Older Pillow versions open 16-bit greyscale PNGs as mode "I" rather than "I;16".
    deep = Image.fromarray(np.array([[0, 257 * 10], [32896, 65535]], np.int32), mode="I")
    assert np.asarray(datasets._to_rgb(deep))[..., 0].tolist() == [[0, 10], [128, 255]]


def test_non_square_images_are_resized_and_centre_cropped(tmp_path):
    bands = np.zeros((30, 90, 3), np.uint8)                 # red | green | blue, 30 px each
    bands[:, :30, 0] = bands[:, 30:60, 1] = bands[:, 60:, 2] = 255
    save(Image.fromarray(bands), tmp_path / "wide.png")
    save(Image.fromarray(bands.transpose(1, 0, 2)), tmp_path / "tall.png")
    save(solid((1, 2, 3), size=(5, 5)), tmp_path / "tiny.png")     # upscaled
    data = load_image_folder(tmp_path, 10)
    assert data.images.shape == (3, 10, 10, 3)
    tall, tiny, wide = data.images.astype(int)               # natural name order
    for crop in (wide, tall):
        assert (np.abs(crop[2:-2, 2:-2] - (0, 255, 0)) <= 3).all()  # the middle band only
    assert (tiny == (1, 2, 3)).all()


def test_files_are_read_in_natural_name_order(tmp_path):
    for name in ("img10.png", "img2.png", "img1.png"):
        save(solid((int(name[3:-4]), 0, 0)), tmp_path / name)
    data = load_image_folder(tmp_path, 4)
    assert data.names == ["img1.png", "img2.png", "img10.png"]
    assert data.images[:, 0, 0, 0].tolist() == [1, 2, 10]


def test_missing_and_empty_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="no folder at .*nowhere"):
        load_image_folder(tmp_path / "nowhere", 8)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    save(solid(0, mode="L"), tmp_path / "empty" / "sub" / "deep.png")
    with pytest.raises(DataError, match="no images in .*empty.*sub-folders are not searched"):
        load_image_folder(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="no dataset folder"):
        load_dataset(SMOKE, tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_images_fail_with_the_file_name_or_are_skipped(tmp_path, damage):
    save(solid((1, 2, 3), size=(64, 64)), tmp_path / "good.png")
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    bad = save(Image.fromarray(noisy), tmp_path / "bad.png")
    if damage == "garbage":
        bad.write_bytes(b"this is not a png at all")
    else:
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png.*skip_corrupt=True"):
        load_image_folder(tmp_path, 8)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\).*bad\.png"):
        data = load_image_folder(tmp_path, 8, skip_corrupt=True)
    assert data.names == ["good.png"]


# ----------------------------------------------------------------------------- course layout

@pytest.mark.parametrize("under_test", [True, False])
@pytest.mark.parametrize("header,id_column", [(False, False), (True, False), (True, True),
                                              (False, True)])
def test_course_layout_with_csv_ground_truth(tmp_path, under_test, header, id_column):
    truth, masks = course_tree(tmp_path, header=header, id_column=id_column,
                               under_test=under_test)
    splits = load_course_dataset(tmp_path, 64)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 2, 3]
    test = splits["test"]
    np.testing.assert_array_equal(test.images, truth)
    np.testing.assert_array_equal(test.masks, masks)        # black in the PNG = True = missing
    assert "ground truth from" in test.source and test.names == ["0000.png", "0001.png", "0002.png"]
    assert splits["train"].masks is None and splits["train"].labels == {}


def test_course_layout_with_png_ground_truth_and_another_size(tmp_path):
    truth, masks = course_tree(tmp_path, gt="png")
    test = load_course_dataset(tmp_path, 32)["test"]
    assert test.images.shape == (3, 32, 32, 3) and test.masks.shape == (3, 32, 32)
    # Nearest-neighbour resizing keeps the masks binary and about as large.
    assert abs(test.masks.mean() - masks.mean()) < 0.03


def test_course_layout_without_ground_truth_is_flagged(tmp_path):
    truth, masks = course_tree(tmp_path, gt=None)
    splits = load_course_dataset(tmp_path)
    test = splits["test"]
    assert "MASKED images, no ground truth" in test.source
    assert (test.images[masks] == 128).all()
    for images in (test, test.subset([0, 1])):
        with pytest.raises(DataError, match=r"MASKED images, .*: there is no ground truth to score"):
            images.require_ground_truth()
    splits["train"].require_ground_truth()                      # training needs none


def test_an_index_beyond_the_set_is_named_with_the_valid_range(tmp_path):
    course_tree(tmp_path)
    test = load_course_dataset(tmp_path)["test"]
    for take in (test.tensors, test.mask_tensors, test.subset):
        with pytest.raises(DataError, match=r"image index 999 is out of range: course:test .* holds 3 "
                                            r"images \(indices 0\.\.2\)"):
            take([0, 999])
    assert test.subset([-1]).names == ["0002.png"]


def test_an_empty_data_root_is_refused_not_read_as_the_current_folder():
    with pytest.raises(ValueError, match=r"the dataset folder \(data_root, --data-root\) is an empty path"):
        load_dataset(SMOKE, "")


def test_csv_ids_put_rows_in_file_order(tmp_path):
    truth, _ = course_tree(tmp_path, gt=None)
    names = ["0002", "0000", "0001"]                         # rows in another order
    write_csv(tmp_path / "test" / "truth.csv", truth[[2, 0, 1]], ids=names)
    np.testing.assert_array_equal(load_course_dataset(tmp_path)["test"].images, truth)


def test_load_dataset_recognises_the_course_layout(tmp_path):
    truth, _ = course_tree(tmp_path)
    splits = load_dataset(SMOKE, tmp_path)                  # smoke: 32 x 32
    assert splits["test"].images.shape == (3, 32, 32, 3) and len(splits["train"]) == 4


def test_load_dataset_splits_a_plain_folder(tmp_path):
    for k in range(40):
        save(solid((k, 0, 0)), tmp_path / f"{k:03d}.png")
    splits = load_dataset(SMOKE, tmp_path)
    sizes = {name: len(part) for name, part in splits.items()}
    assert sizes == {"train": 36, "val": 2, "test": 2}
    names = [set(part.names) for part in splits.values()]
    assert set.union(*names) == {f"{k:03d}.png" for k in range(40)}
    assert sum(map(len, names)) == 40                       # disjoint
    test = splits["test"]
    assert test.masks.shape == (2, 32, 32) and splits["train"].masks is None
    assert 0.2 < test.masks.mean() < 0.3
    again = load_dataset(SMOKE, tmp_path)
    assert again["test"].names == test.names                # deterministic
    np.testing.assert_array_equal(again["test"].masks, test.masks)
    with pytest.raises(DataError, match="at least 3"):
        for path in list(tmp_path.iterdir())[2:]:
            path.unlink()
        load_dataset(SMOKE, tmp_path)


# ----------------------------------------------------------------------------- bad course data

def test_mask_of_the_wrong_size_names_the_file(tmp_path):
    course_tree(tmp_path)
    save(mask_png(brush(32)), tmp_path / "test" / "mask64" / "0001.png")
    with pytest.raises(DataError, match=r"mask .*0001\.png is 32x32 but its image .* is 64x64"):
        load_course_dataset(tmp_path)


def test_mask_count_must_match_the_images(tmp_path):
    course_tree(tmp_path)
    (tmp_path / "test" / "mask64" / "0002.png").unlink()
    with pytest.raises(DataError, match="3 masked images .* but 2 masks"):
        load_course_dataset(tmp_path)


@pytest.mark.parametrize("value,problem", [(0, "all black"), (255, "all white")])
def test_blank_masks_are_errors(tmp_path, value, problem):
    course_tree(tmp_path)
    save(solid(value, size=(64, 64), mode="L"), tmp_path / "test" / "mask64" / "0000.png")
    with pytest.raises(DataError, match=rf"mask .*0000\.png is {problem}"):
        load_course_dataset(tmp_path)


def test_inverted_masks_give_a_warning(tmp_path):
    _, masks = course_tree(tmp_path)
    for k, mask in enumerate(masks):
        save(mask_png(~mask), tmp_path / "test" / "mask64" / f"{k:04d}.png")
    with pytest.warns(UserWarning, match="BLACK = missing.*inverted"):
        load_course_dataset(tmp_path)


def test_csv_rows_of_the_wrong_length_are_errors(tmp_path):
    truth, _ = course_tree(tmp_path, gt=None)
    path = tmp_path / "test" / "gt.csv"
    write_csv(path, truth)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 5)[0]                   # drop five values from row 2
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"gt\.csv row 2 has 12283 values.*12288"):
        load_course_dataset(tmp_path)


def csv_with_a_bad_value(root, row, value, start=b""):
    """A course tree whose gt.csv holds ``value`` as the 8th value of ``row`` (0-based);
    ``start``: bytes before the first row (Excel's byte-order mark)."""
    truth, _ = course_tree(root, gt=None)
    path = root / "test" / "gt.csv"
    write_csv(path, truth)
    rows = path.read_text().splitlines()
    values = rows[row].split(",")
    values[7] = value
    rows[row] = ",".join(values)
    path.write_bytes(start + ("\n".join(rows) + "\n").encode())
    return path


def test_csv_values_must_be_pixels(tmp_path):
    path = csv_with_a_bad_value(tmp_path, 2, "300")
    with pytest.raises(DataError, match="row 3 holds values outside 0..255"):
        read_gt_csv(path, 64)


@pytest.mark.parametrize("header", [False, True])
def test_an_excel_csv_with_a_byte_order_mark_is_read(tmp_path, header):
    truth, _ = course_tree(tmp_path, gt=None)
    path = tmp_path / "test" / "gt.csv"
    write_csv(path, truth, header=header)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))   # "CSV UTF-8"
    np.testing.assert_array_equal(load_course_dataset(tmp_path)["test"].images, truth)


@pytest.mark.parametrize("index", [False, True])
@pytest.mark.parametrize("start", [0, 1])
def test_a_header_of_column_numbers_is_skipped(tmp_path, index, start):
    truth, _ = course_tree(tmp_path, gt=None)
    values = truth.reshape(len(truth), -1)
    lines = [",".join(([""] if index else []) + [str(i + start) for i in range(values.shape[1])])]
    lines += [",".join(([str(k)] if index else []) + list(map(str, row))) for k, row in enumerate(values)]
    (tmp_path / "test" / "gt.csv").write_text("\n".join(lines) + "\n")      # pandas' to_csv
    np.testing.assert_array_equal(load_course_dataset(tmp_path)["test"].images, truth)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_bad_first_row_is_named_not_taken_for_a_header(tmp_path, bom):
    csv_with_a_bad_value(tmp_path, 0, "256", start=bom)
    with pytest.raises(DataError, match=r"gt\.csv row 1 holds values outside 0\.\.255 \(256 at value 8\)"):
        load_course_dataset(tmp_path)


def test_ground_truth_count_must_match(tmp_path):
    truth, _ = course_tree(tmp_path, gt=None)
    write_csv(tmp_path / "test" / "gt.csv", truth[:2])
    with pytest.raises(DataError, match="2 ground-truth rows but there are 3 masked images"):
        load_course_dataset(tmp_path)


def test_several_csv_files_must_be_chosen_between(tmp_path):
    truth, _ = course_tree(tmp_path)
    write_csv(tmp_path / "other.csv", truth)
    with pytest.raises(DataError, match="several CSV files.*gt_csv="):
        load_course_dataset(tmp_path)
    test = load_course_dataset(tmp_path, gt_csv=tmp_path / "other.csv")["test"]
    np.testing.assert_array_equal(test.images, truth)


def test_missing_test_folders_are_named(tmp_path):
    course_tree(tmp_path)
    for path in (tmp_path / "test" / "mask64").iterdir():
        path.unlink()
    (tmp_path / "test" / "mask64").rmdir()
    with pytest.raises(DataError, match=r"no folder at .*mask64"):
        load_course_dataset(tmp_path)


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    folder = tmp_path / "gifs"
    folder.mkdir()
    frames = [solid((200, 0, 0)), solid((0, 0, 200))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    solid((0, 200, 0)).save(folder / "still.gif")
    data = load_image_folder(folder, 8)
    assert data.names == ["anim.gif", "still.gif"]
    assert (np.abs(data.images[0].astype(int) - (200, 0, 0)) <= 8).all()
    assert (np.abs(data.images[1].astype(int) - (0, 200, 0)) <= 8).all()


def test_a_failing_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        toy_cats(SMOKE, "val", root=tmp_path, progress=False)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_cache_is_shareable_and_defaults_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "shared"))
    toy_cats(SMOKE, "val", progress=False)
    (cache,) = (tmp_path / "shared").rglob("*.npz")
    assert cache.stat().st_mode & 0o777 == 0o644
