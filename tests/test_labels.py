"""Label-id assignment (tfdrop.labels): exact pinned maps, source ids kept, 1..N otherwise,
each label resolved once and checked against the budget."""

from __future__ import annotations

import pytest

from tfdrop.codec.model import Annotation, Box, Item, LabelMap, LabelMapItem
from tfdrop.errors import FormatError, LimitExceededError, UnknownLabelError
from tfdrop.labels import LabelResolver
from tfdrop.limits import Limits

BOX = Box(0.1, 0.1, 0.5, 0.5)


def _item(*labels: str, name: str = "a.jpg") -> Item:
    return Item(name=name, objects=tuple(Annotation(label=lb, box=BOX) for lb in labels))


def test_ids_follow_the_source_list_then_first_appearance() -> None:
    r = LabelResolver(None, ["cat", "dog", "cat"], None)
    out = r.assign(_item("dog", "bird", "cat", "bird"))
    assert [o.label_id for o in out.objects] == [2, 3, 1, 3]
    assert r.map.names == ["cat", "dog", "bird"]
    assert [it.id for it in r.map.items] == [1, 2, 3]


def test_a_source_map_keeps_its_non_contiguous_ids_and_new_labels_take_the_next_free_id() -> None:
    source = LabelMap((LabelMapItem(id=3, name="cat"), LabelMapItem(id=90, name="dog")))
    r = LabelResolver(None, [], source)
    out = r.assign(_item("dog", "fox"))
    assert [o.label_id for o in out.objects] == [90, 91]
    assert [(it.id, it.name) for it in r.map.items] == [(3, "cat"), (90, "dog"), (91, "fox")]


def test_a_pinned_map_refuses_a_label_it_lacks_naming_item_and_object() -> None:
    r = LabelResolver(LabelMap.from_names(["cat"]), [], None)
    with pytest.raises(UnknownLabelError) as info:
        r.assign(_item("cat", "dog", name="x.jpg"))
    assert (info.value.item, info.value.obj) == ("x.jpg", 1)
    assert "dog" in info.value.message


def test_an_unchanged_item_is_returned_as_is() -> None:
    r = LabelResolver(None, ["cat"], None)
    first = r.assign(_item("cat"))
    assert r.assign(first) is first


def test_twenty_thousand_distinct_labels_resolve_in_linear_work() -> None:
    # used to rebuild the whole map for every new label (quadratic: minutes for 20k labels);
    # counted in map builds, not seconds: the map is built once, when it is asked for
    names = [f"label{i}" for i in range(20_000)]
    r = LabelResolver(None, [], None)
    builds = 0
    real_init = LabelMap.__post_init__

    def counting(self: LabelMap) -> None:
        nonlocal builds
        builds += 1
        real_init(self)

    LabelMap.__post_init__ = counting  # type: ignore[method-assign]
    try:
        out = r.assign(_item(*names))
        assert builds == 0
        assert len(r.map) == 20_000
        assert builds == 1
    finally:
        LabelMap.__post_init__ = real_init  # type: ignore[method-assign]
    assert out.objects[-1].label_id == 20_000


def test_more_labels_than_max_labels_is_limit_exceeded() -> None:
    r = LabelResolver(None, [], None, limits=Limits(max_labels=3))
    with pytest.raises(LimitExceededError) as info:
        r.assign(_item("a", "b", "c", "d", name="x.jpg"))
    err = info.value
    assert (err.limit, err.cap, err.value, err.item, err.obj) == ("max_labels", 3, 4, "x.jpg", 3)
    assert err.to_dict()["kind"] == "limit_exceeded"
    assert "--limit max_labels=" in err.hint


def test_a_source_label_list_over_max_labels_is_refused_up_front() -> None:
    with pytest.raises(LimitExceededError):
        LabelResolver(None, [f"l{i}" for i in range(5)], None, limits=Limits(max_labels=4))


def test_a_label_holding_a_lone_surrogate_is_a_format_error_naming_the_item() -> None:
    r = LabelResolver(None, [], None)
    with pytest.raises(FormatError) as info:
        r.assign(_item("ok", "ca\ud800t", name="x.jpg"))
    assert (info.value.item, info.value.obj) == ("x.jpg", 1)
    assert "\\ud800" in info.value.message


def test_a_label_longer_than_max_text_bytes_is_limit_exceeded() -> None:
    r = LabelResolver(None, [], None, limits=Limits(max_text_bytes=8))
    with pytest.raises(LimitExceededError) as info:
        r.assign(_item("x" * 9))
    assert info.value.limit == "max_text_bytes"


def test_a_limit_error_survives_pickling_whole() -> None:
    # a worker process's error reaches the parent through pickle (tfdrop.units)
    import pickle

    err = LimitExceededError("too many", limit="max_labels", value=5, cap=4, item="x.jpg")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is LimitExceededError
    assert back.to_dict() == err.to_dict()
    assert str(back) == str(err)


@pytest.mark.parametrize(
    "label", [" lead", "trail ", "a\rb", "a\nb", "a\x0cb", "a\x85b", "a\u2028b", "a\x00b", "a\tb"]
)
def test_a_label_a_text_format_cannot_carry_is_refused_up_front(label: str) -> None:
    # found by the outside attack: these reached the CVAT and YOLO writers and failed the
    # read-back as a "bug"; a TFRecord target keeps any text
    r = LabelResolver(None, [], None, plain_text=True)
    with pytest.raises(FormatError) as info:
        r.assign(_item("ok", label, name="x.jpg"))
    assert (info.value.item, info.value.obj) == ("x.jpg", 1)
    LabelResolver(None, [], None).assign(_item(label))
    with pytest.raises(FormatError):
        LabelResolver(None, [label], None, plain_text=True)


def test_ids_the_source_gave_that_the_text_overrides_are_counted() -> None:
    # found by the outside attack: "cat" id 1 then "dog" id 1 were renumbered without a word
    r = LabelResolver(None, [], None)
    cat = Item(name="a.jpg", objects=(Annotation(label="cat", label_id=1, box=BOX),))
    dog = Item(name="b.jpg", objects=(Annotation(label="dog", label_id=1, box=BOX),))
    r.assign(cat)
    assert r.assign(dog).objects[0].label_id == 2
    assert r.renumbered == 1
    consistent = LabelResolver(None, [], None)  # ids 5 and 7, never contradicted: no warning
    consistent.assign(Item(name="a.jpg", objects=(Annotation(label="cat", label_id=5, box=BOX),)))
    consistent.assign(Item(name="b.jpg", objects=(Annotation(label="dog", label_id=7, box=BOX),)))
    assert consistent.renumbered == 0
    pinned = LabelResolver(LabelMap.from_names(["dog", "cat"]), [], None)
    pinned.assign(cat)
    assert pinned.renumbered == 0  # a pinned map decides on purpose
