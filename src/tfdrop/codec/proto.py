"""Protobuf messages tfdrop speaks, declared here at run time.

``tf.train.Example`` (TensorFlow ``core/example/example.proto`` and ``feature.proto``) and
``StringIntLabelMap`` (TF models ``protos/string_int_label_map.proto``). Only the field numbers
and types are the wire contract; this module declares messages with the same numbers in a private
descriptor pool (so it never clashes with TensorFlow's own classes in a process that has both)
and builds the classes from it, so no generated code and no ``protoc`` are needed.

Also the few fields of the OD API's ``InputReader`` and ``TrainEvalPipelineConfig``
(``protos/input_reader.proto``, ``pipeline.proto``) that the report's ``input_reader`` block
uses: tests parse the block against them.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _msg(
    fdp: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple[Any, ...]]
) -> descriptor_pb2.DescriptorProto:
    m = fdp.message_type.add(name=name)
    for spec in fields:
        fname, number, label, ftype = spec[:4]
        f = m.field.add(name=fname, number=number, label=label, type=ftype)
        if len(spec) > 4 and spec[4]:
            f.type_name = spec[4]
        if len(spec) > 5 and spec[5] is not None:
            f.oneof_index = spec[5]
        if len(spec) > 6 and spec[6]:
            f.options.packed = True
    return m


def _example_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfdrop/tensorflow_example.proto", package="tensorflow", syntax="proto3"
    )
    _msg(fdp, "BytesList", [("value", 1, _REP, _F.TYPE_BYTES)])
    _msg(fdp, "FloatList", [("value", 1, _REP, _F.TYPE_FLOAT, None, None, True)])
    _msg(fdp, "Int64List", [("value", 1, _REP, _F.TYPE_INT64, None, None, True)])
    feature = _msg(
        fdp,
        "Feature",
        [
            ("bytes_list", 1, _OPT, _F.TYPE_MESSAGE, ".tensorflow.BytesList", 0),
            ("float_list", 2, _OPT, _F.TYPE_MESSAGE, ".tensorflow.FloatList", 0),
            ("int64_list", 3, _OPT, _F.TYPE_MESSAGE, ".tensorflow.Int64List", 0),
        ],
    )
    feature.oneof_decl.add(name="kind")
    features = _msg(
        fdp,
        "Features",
        [("feature", 1, _REP, _F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry")],
    )
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, label=_OPT, type=_F.TYPE_STRING)
    entry.field.add(
        name="value", number=2, label=_OPT, type=_F.TYPE_MESSAGE, type_name=".tensorflow.Feature"
    )
    entry.options.map_entry = True
    _msg(fdp, "Example", [("features", 1, _OPT, _F.TYPE_MESSAGE, ".tensorflow.Features")])
    return fdp


def _label_map_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfdrop/string_int_label_map.proto",
        package="object_detection.protos",
        syntax="proto2",
    )
    freq = fdp.enum_type.add(name="LVISFrequency")
    for i, n in enumerate(("UNSPECIFIED_FREQUENCY", "FREQUENT", "COMMON", "RARE")):
        freq.value.add(name=n, number=i)
    item = _msg(
        fdp,
        "StringIntLabelMapItem",
        [
            ("name", 1, _OPT, _F.TYPE_STRING),
            ("id", 2, _OPT, _F.TYPE_INT32),
            ("display_name", 3, _OPT, _F.TYPE_STRING),
            (
                "keypoints",
                4,
                _REP,
                _F.TYPE_MESSAGE,
                ".object_detection.protos.StringIntLabelMapItem.KeypointMap",
            ),
            ("ancestor_ids", 5, _REP, _F.TYPE_INT32),
            ("descendant_ids", 6, _REP, _F.TYPE_INT32),
            ("frequency", 7, _OPT, _F.TYPE_ENUM, ".object_detection.protos.LVISFrequency"),
            ("instance_count", 8, _OPT, _F.TYPE_INT32),
        ],
    )
    kp = item.nested_type.add(name="KeypointMap")
    kp.field.add(name="id", number=1, label=_OPT, type=_F.TYPE_INT32)
    kp.field.add(name="label", number=2, label=_OPT, type=_F.TYPE_STRING)
    _msg(
        fdp,
        "StringIntLabelMap",
        [
            (
                "item",
                1,
                _REP,
                _F.TYPE_MESSAGE,
                ".object_detection.protos.StringIntLabelMapItem",
            )
        ],
    )
    return fdp


def _input_reader_file() -> descriptor_pb2.FileDescriptorProto:
    """The ``InputReader`` fields tfdrop writes (numbers as in TF models' input_reader.proto),
    and the two pipeline.config fields that hold one (``eval_input_reader`` is repeated since
    TF2's model_lib_v2)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tfdrop/input_reader.proto", package="object_detection.protos", syntax="proto2"
    )
    mask_type = fdp.enum_type.add(name="InstanceMaskType")
    for i, n in enumerate(("DEFAULT", "NUMERICAL_MASKS", "PNG_MASKS")):
        mask_type.value.add(name=n, number=i)
    _msg(fdp, "TFRecordInputReader", [("input_path", 1, _REP, _F.TYPE_STRING)])
    reader = _msg(
        fdp,
        "InputReader",
        [
            ("label_map_path", 1, _OPT, _F.TYPE_STRING),
            ("shuffle", 2, _OPT, _F.TYPE_BOOL),
            ("num_epochs", 5, _OPT, _F.TYPE_UINT32),
            ("load_instance_masks", 7, _OPT, _F.TYPE_BOOL),
            (
                "tf_record_input_reader",
                8,
                _OPT,
                _F.TYPE_MESSAGE,
                ".object_detection.protos.TFRecordInputReader",
                0,
            ),
            ("mask_type", 10, _OPT, _F.TYPE_ENUM, ".object_detection.protos.InstanceMaskType"),
            ("num_keypoints", 16, _OPT, _F.TYPE_UINT32),
            ("max_number_of_boxes", 21, _OPT, _F.TYPE_INT32),
            ("name", 23, _OPT, _F.TYPE_STRING),
        ],
    )
    reader.oneof_decl.add(name="input_reader")
    _msg(
        fdp,
        "TrainEvalPipelineConfig",
        [
            (
                "train_input_reader",
                3,
                _OPT,
                _F.TYPE_MESSAGE,
                ".object_detection.protos.InputReader",
            ),
            ("eval_input_reader", 5, _REP, _F.TYPE_MESSAGE, ".object_detection.protos.InputReader"),
        ],
    )
    return fdp


_POOL: Final = descriptor_pool.DescriptorPool()
_POOL.Add(_example_file())
_POOL.Add(_label_map_file())
_POOL.Add(_input_reader_file())


def _cls(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(name))


Example: Final = _cls("tensorflow.Example")
Features: Final = _cls("tensorflow.Features")
Feature: Final = _cls("tensorflow.Feature")
StringIntLabelMap: Final = _cls("object_detection.protos.StringIntLabelMap")
InputReader: Final = _cls("object_detection.protos.InputReader")
TrainEvalPipelineConfig: Final = _cls("object_detection.protos.TrainEvalPipelineConfig")
POOL: Final = _POOL
