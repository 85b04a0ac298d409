"""Dataset readers on tiny fixtures written in each benchmark's published format."""
import pytest

from caption_fixtures import captions_for, write_image, write_labels_csv, write_precomp, write_ucm_json
from ssjdn.core.errors import UserError
from ssjdn.training.benchmarks import UCM_CLASSES, mine_sydney_label, prefix_category, ucm_label
from ssjdn.training.datasets import load_dataset


def test_ucm_json_reads_splits_captions_and_labels(tmp_path):
    numbers = write_ucm_json(tmp_path, {"train": 6, "val": 3, "test": 3})
    train = load_dataset(tmp_path, "train")
    assert train.name == "ucm" and len(train) == 6
    assert all(len(c) == 5 for c in train.captions)
    assert train.labels == [(n - 1) // 100 for n in numbers["train"]]
    assert train.categories == UCM_CLASSES
    assert len(train.all_captions) == 30 and train.all_captions[5] == train.captions[1][0]


def test_images_are_found_by_stem_whatever_the_extension(tmp_path):
    for suffix in (".webp", ".jpg", ".tif"):
        root = tmp_path / suffix[1:]
        write_ucm_json(root, {"train": 3, "val": 1}, suffix=suffix)
        dataset = load_dataset(root, "train")
        assert [p.suffix for p in dataset.image_paths] == [suffix] * 3
        assert [p.stem for p in dataset.image_paths] == [n.split(".")[0]
                                                         for n in dataset.image_names]


def test_missing_images_raise_a_user_error_naming_them(tmp_path):
    numbers = write_ucm_json(tmp_path, {"train": 3, "test": 2})
    for n in numbers["test"]:
        (tmp_path / "images" / f"{n}.png").unlink()
    with pytest.raises(UserError, match=r"2 of 2 images are missing.*%d\.tif" % numbers["test"][0]):
        load_dataset(tmp_path, "test")
    # Captions alone still read, e.g. to inspect a split whose images are withheld.
    assert len(load_dataset(tmp_path, "test", require_images=False)) == 2


def test_unknown_split_lists_the_available_ones(tmp_path):
    write_ucm_json(tmp_path, {"train": 2, "val": 2})
    with pytest.raises(UserError, match="'dev'.*train, val"):
        load_dataset(tmp_path, "dev")


def test_wrong_caption_count_is_a_user_error(tmp_path):
    write_ucm_json(tmp_path, {"train": 2})
    import json
    path = tmp_path / "dataset_ucm.json"
    data = json.loads(path.read_text())
    data["images"][1]["sentences"] = data["images"][1]["sentences"][:4]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="has 4 captions"):
        load_dataset(tmp_path, "train")


def test_precomp_text_files_with_one_name_per_image_or_per_caption(tmp_path):
    root = tmp_path / "rsitmd"
    names = {"train": ["airport_1.tif", "farmland_2.tif", "12.tif"],
             "test": ["airport_3.tif", "baseballfield_4.tif"]}
    labels = {"airport_1.tif": 1, "farmland_2.tif": 0, "12.tif": 2, "airport_3.tif": 1,
              "baseballfield_4.tif": 2}
    write_precomp(root, names, labels)          # test lists each image once per caption
    for split in names:
        for name in names[split]:
            write_image(root / "images" / name.replace(".tif", ".jpg"), labels[name], 1)
    train = load_dataset(root, "train")
    test = load_dataset(root, "test")
    assert train.name == "rsitmd" and test.image_names == names["test"]
    assert train.captions[1] == captions_for(0, 1)
    # Categories from the file-name prefixes of every split; numeric names have no label.
    assert train.categories == ["airport", "baseballfield", "farmland"]
    assert train.labels == [0, 2, -1]
    assert test.labels == [0, 1]


def test_precomp_rejects_a_caption_file_of_the_wrong_length(tmp_path):
    root = tmp_path / "ucm"
    write_precomp(root, {"train": ["1.tif", "2.tif"]}, {"1.tif": 0, "2.tif": 0})
    caps = root / "precomp_amfmn" / "train_caps.txt"
    caps.write_text("\n".join(caps.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(UserError, match="9 lines for 2 images"):
        load_dataset(root, "train", require_images=False)


def test_labels_csv_reads_rsicd_style_rows(tmp_path):
    root = tmp_path / "rsicd"
    rows = [("airport_1.jpg", "train", 1), ("00017.jpg", "train", 0), ("farmland_9.jpg", "val", 0),
            ("airport_5.jpg", "test", 1)]
    write_labels_csv(root, "rsicd", rows)
    for name, _, label in rows:
        write_image(root / "images" / name, label, 2)
    train = load_dataset(root, "train")
    assert train.name == "rsicd" and train.image_names == ["airport_1.jpg", "00017.jpg"]
    assert train.captions[0] == captions_for(1, 0)
    assert train.categories == ["airport", "farmland"]
    assert train.labels == [0, -1]
    assert load_dataset(root, "val").labels == [1]


def test_label_rules_of_each_benchmark():
    assert ucm_label("1.tif") == 0 and ucm_label("100.tif") == 0 and ucm_label("101.tif") == 1
    assert ucm_label("2100.tif") == 20 and ucm_label("2101.tif") == -1
    assert prefix_category("denseresidential_12.jpg") == "denseresidential"
    assert prefix_category("00012.jpg") is None
    # Sydney: caption-mined; majority of captions that mention a class word, ties -> -1.
    assert mine_sydney_label(["A residential area with houses", "many houses", "a road",
                              "a river nearby", "buildings"]) == 0
    assert mine_sydney_label(["a river", "the sea"]) == -1
    assert mine_sydney_label(["some trees"] * 5) == -1


def edit_ucm_json(root, edit):
    import json
    path = root / "dataset_ucm.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("key", ["sentences", "filename", "split"])
def test_caption_json_record_without_a_field_names_the_file_and_the_field(tmp_path, key):
    write_ucm_json(tmp_path, {"train": 3, "val": 1})
    path = edit_ucm_json(tmp_path, lambda data: data["images"][1].pop(key))
    with pytest.raises(UserError, match=rf"{path}.*image 2 .*'{key}'"):
        load_dataset(tmp_path, "train")


def test_caption_json_sentence_without_raw_names_the_file_and_the_image(tmp_path):
    write_ucm_json(tmp_path, {"train": 3, "val": 1})
    path = edit_ucm_json(tmp_path, lambda data: data["images"][2]["sentences"][3].pop("raw"))
    with pytest.raises(UserError, match=rf"{path}.*image 3 \(.*\.tif\).*sentence 4.*'raw'"):
        load_dataset(tmp_path, "train")


@pytest.mark.parametrize("content", ["{not json", '{"no_images": []}', '{"images": 3}', "[1, 2]",
                                     '{"images": ["x"]}'])
def test_caption_json_of_the_wrong_shape_is_a_user_error(tmp_path, content):
    write_ucm_json(tmp_path, {"train": 2})
    path = tmp_path / "dataset_ucm.json"
    path.write_text(content)
    with pytest.raises(UserError, match=str(path)):
        load_dataset(tmp_path, "train")


def test_caption_json_that_is_not_text_is_a_user_error(tmp_path):
    write_ucm_json(tmp_path, {"train": 2})
    (tmp_path / "dataset_ucm.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="dataset_ucm.json"):
        load_dataset(tmp_path, "train")


def test_labels_csv_without_a_column_names_the_file_and_the_column(tmp_path):
    root = tmp_path / "rsicd"
    write_labels_csv(root, "rsicd", [("airport_1.jpg", "train", 1)])
    path = root / "rsicd_labels_splits.csv"
    path.write_text(path.read_text().replace("sentence", "sentences", 1))
    with pytest.raises(UserError, match=rf"{path}.*'sentence'"):
        load_dataset(root, "train", require_images=False)


def test_a_missing_images_folder_is_named(tmp_path):
    write_ucm_json(tmp_path, {"train": 2})
    for image in (tmp_path / "images").iterdir():
        image.unlink()
    (tmp_path / "images").rmdir()
    with pytest.raises(UserError, match=rf"no images folder.*{tmp_path}.*images/"):
        load_dataset(tmp_path, "train")


def test_a_data_root_that_is_a_file_is_a_user_error(tmp_path):
    path = tmp_path / "dataset_ucm.json"
    path.write_text("{}")
    with pytest.raises(UserError, match="not a folder"):
        load_dataset(path, "train")
