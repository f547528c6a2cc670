"""label_map.pbtxt (tfdrop.codec.labelmap): TF models' and peers' real maps, CVAT's layout, errors.

The real maps come from ``../shared/corpus`` (TF models: pet, mscoco with its repeated name "NA",
mscoco_complete with id 0 background, face_person_with_keypoints with ``item: {`` and
keypoints; Datumaro's and Roboflow's). Expected values are written out by hand from the files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_corpus
from tfdrop.codec.labelmap import format_label_map, parse_label_map
from tfdrop.codec.model import Keypoint, LabelMap, LabelMapItem
from tfdrop.errors import LabelMapError

TF_DATA = ("tensorflow__models", "research", "object_detection", "data")


def _tf_map(name: str) -> Path:
    return require_corpus(*TF_DATA, name)


def _round_trips(lm: LabelMap) -> None:
    assert parse_label_map(format_label_map(lm)) == lm


# --- the real label maps ----------------------------------------------------------------------


@pytest.mark.corpus
def test_pet_label_map_reads_all_37_breeds() -> None:
    lm = parse_label_map(_tf_map("pet_label_map.pbtxt").read_bytes())
    assert len(lm) == 37
    assert [it.id for it in lm.items] == list(range(1, 38))
    assert lm.items[0] == LabelMapItem(id=1, name="Abyssinian")
    assert lm.name_of(6) == "Bengal"
    assert lm.id_of("american_pit_bull_terrier") == 3
    assert lm.items[-1] == LabelMapItem(id=37, name="yorkshire_terrier")
    assert lm.id_of("abyssinian") is None  # names are case-sensitive
    _round_trips(lm)


@pytest.mark.corpus
def test_mscoco_label_map_keeps_display_names_where_the_name_repeats() -> None:
    lm = parse_label_map(_tf_map("mscoco_label_map.pbtxt").read_bytes())
    assert len(lm) == 80
    ids = [it.id for it in lm.items]
    assert ids[:5] == [1, 2, 3, 4, 5]
    assert ids[-1] == 90
    assert 12 not in ids  # COCO's ids have holes: never renumbered
    assert lm.items[0] == LabelMapItem(id=1, name="/m/01g317", display_name="person")
    assert lm.items[4] == LabelMapItem(id=5, name="NA", display_name="airplane")
    assert sum(it.name == "NA" for it in lm.items) == 68
    # "NA" names nothing; the display name does
    assert lm.id_of("NA") is None
    assert lm.id_of("airplane") == 5
    assert lm.id_of("toothbrush") == 90
    assert lm.name_of(90) == "toothbrush"
    assert lm.id_of("person") == 1
    assert lm.id_of("/m/01g317") == 1
    assert lm.name_of(1) == "/m/01g317"
    _round_trips(lm)


@pytest.mark.corpus
def test_mscoco_complete_label_map_has_background_at_id_0() -> None:
    lm = parse_label_map(_tf_map("mscoco_complete_label_map.pbtxt").read_bytes())
    assert len(lm) == 91
    assert lm.items[0] == LabelMapItem(id=0, name="background", display_name="background")
    assert lm.name_of(0) == "background"
    assert lm.items[-1] == LabelMapItem(id=90, name="/m/012xff", display_name="toothbrush")
    assert lm.id_of("toothbrush") == 90
    _round_trips(lm)


@pytest.mark.corpus
def test_face_person_keypoint_map_with_item_colon_syntax() -> None:
    path = _tf_map("face_person_with_keypoints_label_map.pbtxt")
    assert "item: {" in path.read_text()
    lm = parse_label_map(path.read_bytes())
    face, person = lm.items
    assert (face.id, face.name, face.display_name) == (1, "face", "face")
    assert face.keypoints[0] == Keypoint(0, "left_eye_center")
    assert [k.id for k in face.keypoints] == list(range(6))
    assert face.keypoints[-1] == Keypoint(5, "right_ear_tragion")
    assert (person.id, person.name, person.display_name) == (2, "Person", "PERSON")
    assert len(person.keypoints) == 17
    assert person.keypoints[0] == Keypoint(6, "NOSE_TIP")
    assert person.keypoints[-1] == Keypoint(22, "RIGHT_ANKLE")
    assert lm.id_of("Person") == 2
    assert lm.id_of("PERSON") == 2
    _round_trips(lm)


@pytest.mark.corpus
@pytest.mark.parametrize("repo", ["openvinotoolkit__datumaro", "cvat-ai__datumaro"])
def test_datumaro_label_map_reads_ten_labels(repo: str) -> None:
    path = require_corpus(repo, "tests", "assets", "tf_detection_api_dataset", "label_map.pbtxt")
    lm = parse_label_map(path.read_bytes())
    assert [(it.id, it.name) for it in lm.items] == [(i + 1, f"label_{i}") for i in range(10)]
    assert all(it.display_name == "" for it in lm.items)
    _round_trips(lm)


@pytest.mark.corpus
@pytest.mark.parametrize("subset", ["train", "val"])
def test_roboflow_label_map_with_name_first_and_display_name(subset: str) -> None:
    path = require_corpus(
        "openvinotoolkit__datumaro",
        "tests",
        "assets",
        "roboflow_dataset",
        "tfrecord",
        subset,
        "label_map.pbtxt",
    )
    lm = parse_label_map(path.read_bytes())
    # Datumaro's own regex reader drops items that carry display_name; we keep both
    assert lm.items == (
        LabelMapItem(id=1, name="label_0", display_name="label_0"),
        LabelMapItem(id=2, name="label_1", display_name="label_1"),
    )
    _round_trips(lm)


# --- writing ----------------------------------------------------------------------------------


def test_written_in_cvat_layout_byte_for_byte() -> None:
    lm = LabelMap.from_names(["label_0", "label_1"])
    assert format_label_map(lm) == (
        "item {\n\tid: 1\n\tname: 'label_0'\n}\n\nitem {\n\tid: 2\n\tname: 'label_1'\n}\n\n"
    )


def test_extra_fields_follow_cvat_fields_and_read_back() -> None:
    lm = LabelMap(
        (
            LabelMapItem(
                id=3,
                name="it's",
                display_name='say "hi"',
                keypoints=(Keypoint(0, "nose"),),
                ancestor_ids=(1,),
                descendant_ids=(4, 5),
                frequency=2,
                instance_count=7,
            ),
        )
    )
    text = format_label_map(lm)
    assert text.startswith("item {\n\tid: 3\n\tname: 'it\\'s'\n\tdisplay_name: ")
    _round_trips(lm)


names = st.text(min_size=1, max_size=12).filter(lambda s: s != "background")


@settings(max_examples=150, deadline=None)
@given(st.lists(names, min_size=1, max_size=8, unique=True), st.lists(names, max_size=8))
def test_any_names_round_trip_through_the_written_text(
    label_names: list[str], displays: list[str]
) -> None:
    items = tuple(
        LabelMapItem(id=i, name=n, display_name=displays[i - 1] if i <= len(displays) else "")
        for i, n in enumerate(label_names, start=1)
    )
    _round_trips(LabelMap(items))


# --- reading: syntax ------------------------------------------------------------------------


def test_either_quote_style_comments_and_any_field_order() -> None:
    text = (
        "# a comment at the top\n"
        "item {\n"
        '  name: "cat"   # trailing comment with item { and }\n'
        "  id: 2\n"
        "}\n"
        "item: {\n"
        "  display_name: 'Dog'\n"
        "  id: 1\n"
        "  name: 'dog'\n"
        "}\n"
    )
    lm = parse_label_map(text)
    assert lm.items == (
        LabelMapItem(id=2, name="cat"),
        LabelMapItem(id=1, name="dog", display_name="Dog"),
    )
    assert lm.id_of("Dog") == 1
    assert lm.names == ["cat", "dog"]


def test_utf8_bom_and_bytes_are_accepted() -> None:
    lm = parse_label_map("\ufeffitem { id: 1 name: 'chat' }".encode())
    assert lm.items == (LabelMapItem(id=1, name="chat"),)


def test_an_item_with_only_display_name_is_named_by_it() -> None:
    lm = parse_label_map("item { id: 1 display_name: 'cat' }")
    assert lm.items == (LabelMapItem(id=1, name="cat", display_name="cat"),)


# --- reading: errors with lines ---------------------------------------------------------------


def _error(text: str | bytes) -> LabelMapError:
    with pytest.raises(LabelMapError) as info:
        parse_label_map(text, file="lm.pbtxt")
    assert info.value.file == "lm.pbtxt"
    return info.value


def test_duplicate_id_names_the_line_of_the_second_item() -> None:
    err = _error("item {\n id: 1\n name: 'a'\n}\n# item { id: 1 }\nitem {\n id: 1\n name: 'b'\n}\n")
    assert err.line == 6
    assert "duplicate id 1" in err.message
    assert "line 1" in err.message


def test_duplicate_name_names_the_line_of_the_second_item() -> None:
    err = _error("item {\n id: 1\n name: 'a'\n}\n\nitem {\n id: 2\n name: \"a\"\n}\n")
    assert err.line == 6
    assert "duplicate name 'a'" in err.message


def test_duplicate_on_one_line_and_braces_inside_strings() -> None:
    assert _error("item { id: 1 name: '{' } item { id: 1 name: 'b' }").line == 1
    assert _error("item { id: 1 name: '}{' }\n\nitem {\n id: 1 name: 'b' }").line == 3


def test_id_0_for_anything_but_background_is_an_error() -> None:
    err = _error("item {\n id: 1\n name: 'a'\n}\nitem {\n id: 0\n name: 'cat'\n}\n")
    assert err.line == 5
    assert "background" in err.message
    assert _error("item { id: -3 name: 'a' }").line == 1
    assert parse_label_map("item { id: 0 name: 'background' }").name_of(0) == "background"


def test_missing_id_or_name_is_an_error() -> None:
    assert "no id" in _error("item {\n name: 'a'\n}").message
    assert "no name" in _error("item { id: 1 name: 'a' }\nitem {\n id: 4\n}").message
    assert _error("item { id: 1 name: 'a' }\nitem {\n id: 4\n}").line == 2


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("item {\n id: 1\n name: 'a'\n}\nitem {\n id: two\n}\n", 6),
        ("hello world", 1),
        ("item {\n id: 1\n name: 'a'\n", 3),
        ("item {\n id: 1 name: 'a' colour: 'red' }", 2),
        ("item { id: 99999999999 name: 'a' }", 1),
        ("\x00\x01", 1),
        ("<html>\n<body>", 1),
        (b"item { id: 1 name: 'a' }\nitem { id: 2 name: '\xff' }", 2),
    ],
)
def test_garbage_is_a_label_map_error_with_the_line(text: str | bytes, line: int) -> None:
    assert _error(text).line == line


def test_a_label_map_with_a_lone_surrogate_name_is_a_label_map_error() -> None:
    # a JSON "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode
    from tfdrop.codec.model import LabelMap
    from tfdrop.errors import LabelMapError

    with pytest.raises(LabelMapError, match="lone surrogate"):
        LabelMap.from_names(["cat", "do\ud800g"])


def test_a_label_map_over_max_labels_is_refused_before_protobuf_parses_it() -> None:
    # found by the outside attack: 2 million items took 80 s and 1.5 GB before the check
    from tfdrop.errors import LimitExceededError

    text = "".join(f"item {{ id: {i} name: 'l{i}' }}\n" for i in range(1, 12))
    text += "item: {\n id: 12 name: 'b' }"
    with pytest.raises(LimitExceededError) as info:
        parse_label_map(text, max_labels=10)
    assert (info.value.limit, info.value.cap) == ("max_labels", 10)
    assert len(parse_label_map(text, max_labels=12)) == 12


def test_a_label_name_over_max_text_bytes_is_refused_naming_the_line() -> None:
    from tfdrop.errors import LimitExceededError

    text = "item { id: 1 name: 'a' }\nitem {\n id: 2\n name: '" + "x" * 100 + "' }\n"
    with pytest.raises(LimitExceededError) as info:
        parse_label_map(text, max_text_bytes=50)
    assert (info.value.limit, info.value.line) == ("max_text_bytes", 2)


def test_the_codec_defaults_are_the_budget_defaults() -> None:
    from tfdrop.codec import labelmap
    from tfdrop.limits import DEFAULT_LIMITS

    assert DEFAULT_LIMITS.max_labels == labelmap.DEFAULT_MAX_LABELS
    assert DEFAULT_LIMITS.max_text_bytes == labelmap.DEFAULT_MAX_TEXT_BYTES
