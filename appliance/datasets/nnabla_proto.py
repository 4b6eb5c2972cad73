"""The part of nnabla's protobuf schema (``NNablaProtoBuf``) that a runtime network needs.

nnabla writes networks as protobuf text (``*.nntxt``) or binary (``*.protobuf``) and parameters as
binary ``parameter.protobuf`` (or HDF5). The messages below carry nnabla's own field numbers (its
``nnabla.proto``, proto3), so both encodings read and write as nnabla does; fields we do not use
are left out and skipped when read (training configs, datasets, optimizers, monitors, the
parameters of functions we do not import).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int64": _F.TYPE_INT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
}

# message → [(field, number, type, repeated)]; a type that is not a scalar names a message
_POOLING = [
    ("kernel", 1, "Shape", False),
    ("stride", 2, "Shape", False),
    ("ignore_border", 3, "bool", False),
    ("pad", 4, "Shape", False),
    ("channel_last", 5, "bool", False),
]
_CONV = [
    ("base_axis", 1, "int64", False),
    ("pad", 2, "Shape", False),
    ("stride", 3, "Shape", False),
    ("dilation", 4, "Shape", False),
]
_SCALAR = [("val", 1, "double", False)]
MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "Shape": [("dim", 1, "int64", True)],
    "NNablaProtoBuf": [
        ("version", 1, "string", False),
        ("network", 100, "Network", True),
        ("parameter", 200, "Parameter", True),
        ("executor", 600, "Executor", True),
    ],
    "Network": [
        ("name", 1, "string", False),
        ("batch_size", 10, "int64", False),
        ("variable", 100, "Variable", True),
        ("function", 200, "Function", True),
    ],
    "Variable": [("name", 1, "string", False), ("type", 2, "string", False), ("shape", 20, "Shape", False)],
    "Parameter": [
        ("variable_name", 1, "string", False),
        ("shape", 20, "Shape", False),
        ("data", 100, "float", True),
        ("need_grad", 101, "bool", False),
    ],
    "Executor": [
        ("name", 1, "string", False),
        ("network_name", 10, "string", False),
        ("data_variable", 50, "DataVariable", True),
        ("output_variable", 80, "OutputVariable", True),
        ("parameter_variable", 90, "ParameterVariable", True),
        ("no_image_normalization", 101, "bool", False),
    ],
    "DataVariable": [("variable_name", 1, "string", False), ("data_name", 3, "string", False)],
    "OutputVariable": [
        ("variable_name", 1, "string", False),
        ("type", 2, "string", False),
        ("data_name", 3, "string", False),
    ],
    "ParameterVariable": [("variable_name", 1, "string", False)],
    "AffineParameter": [("base_axis", 1, "int64", False)],
    "ConvolutionParameter": [*_CONV, ("group", 5, "int64", False), ("channel_last", 6, "bool", False)],
    "DepthwiseConvolutionParameter": [*_CONV, ("multiplier", 5, "int64", False)],
    "DeconvolutionParameter": [
        *_CONV,
        ("group", 5, "int64", False),
        ("channel_last", 6, "bool", False),
        ("output_padding", 7, "Shape", False),
    ],
    "MaxPoolingParameter": _POOLING,
    "AveragePoolingParameter": [*_POOLING, ("including_pad", 6, "bool", False)],
    "SumPoolingParameter": _POOLING,
    "UnpoolingParameter": [("kernel", 1, "Shape", False), ("channel_last", 2, "bool", False)],
    "BatchNormalizationParameter": [
        ("axes", 1, "int64", True),
        ("decay_rate", 2, "float", False),
        ("eps", 3, "float", False),
        ("batch_stat", 4, "bool", False),
        ("no_scale", 5, "bool", False),
        ("no_bias", 6, "bool", False),
    ],
    "FusedBatchNormalizationParameter": [
        ("axes", 1, "int64", True),
        ("decay_rate", 2, "float", False),
        ("eps", 3, "float", False),
        ("batch_stat", 4, "bool", False),
        ("nonlinearity", 5, "string", False),
    ],
    "LeakyReLUParameter": [("alpha", 1, "float", False)],
    "SoftmaxParameter": [("axis", 1, "int64", False)],
    "LogSoftmaxParameter": [("axis", 1, "int64", False)],
    "ELUParameter": [("alpha", 1, "double", False)],
    "SELUParameter": [("scale", 1, "double", False), ("alpha", 2, "double", False)],
    "PReLUParameter": [("base_axis", 1, "int64", False)],
    "DropoutParameter": [("p", 1, "double", False), ("seed", 2, "int64", False)],
    "ReshapeParameter": [("shape", 1, "Shape", False)],
    "ConcatenateParameter": [("axis", 1, "int64", False)],
    "TransposeParameter": [("axes", 1, "int64", True)],
    "PadParameter": [
        ("pad_width", 1, "int64", True),
        ("mode", 2, "string", False),
        ("constant_value", 3, "float", False),
    ],
    "InterpolateParameter": [
        ("output_size", 1, "int64", True),
        ("mode", 2, "string", False),
        ("align_corners", 3, "bool", False),
        ("half_pixel", 4, "bool", False),
        ("half_pixel_for_nn", 5, "bool", False),
        ("channel_last", 6, "bool", False),
    ],
    "MulScalarParameter": _SCALAR,
    "AddScalarParameter": _SCALAR,
}
# Function's ``<type>_param`` fields: nnabla's function type → (field, number, message)
FUNCTION_PARAMS = {
    "Affine": ("affine_param", 1001, "AffineParameter"),
    "Convolution": ("convolution_param", 1005, "ConvolutionParameter"),
    "DepthwiseConvolution": ("depthwise_convolution_param", 1007, "DepthwiseConvolutionParameter"),
    "Deconvolution": ("deconvolution_param", 1008, "DeconvolutionParameter"),
    "MaxPooling": ("max_pooling_param", 1012, "MaxPoolingParameter"),
    "AveragePooling": ("average_pooling_param", 1013, "AveragePoolingParameter"),
    "SumPooling": ("sum_pooling_param", 1015, "SumPoolingParameter"),
    "Unpooling": ("unpooling_param", 1016, "UnpoolingParameter"),
    "LeakyReLU": ("leaky_relu_param", 1023, "LeakyReLUParameter"),
    "Softmax": ("softmax_param", 1024, "SoftmaxParameter"),
    "LogSoftmax": ("log_softmax_param", 1025, "LogSoftmaxParameter"),
    "ELU": ("elu_param", 1026, "ELUParameter"),
    "SELU": ("selu_param", 1027, "SELUParameter"),
    "PReLU": ("prelu_param", 1030, "PReLUParameter"),
    "FusedBatchNormalization": ("fused_batch_normalization_param", 1041, "FusedBatchNormalizationParameter"),
    "BatchNormalization": ("batch_normalization_param", 1042, "BatchNormalizationParameter"),
    "AddScalar": ("add_scalar_param", 1073, "AddScalarParameter"),
    "MulScalar": ("mul_scalar_param", 1074, "MulScalarParameter"),
    "Concatenate": ("concatenate_param", 1133, "ConcatenateParameter"),
    "Pad": ("pad_param", 1137, "PadParameter"),
    "Transpose": ("transpose_param", 1138, "TransposeParameter"),
    "Reshape": ("reshape_param", 1146, "ReshapeParameter"),
    "Interpolate": ("interpolate_param", 1167, "InterpolateParameter"),
    "Dropout": ("dropout_param", 1173, "DropoutParameter"),
}
MESSAGES["Function"] = [
    ("name", 1, "string", False),
    ("type", 2, "string", False),
    ("input", 20, "string", True),
    ("output", 30, "string", True),
    *((field, number, message, False) for field, number, message in FUNCTION_PARAMS.values()),
]


class ProtoError(ValueError):
    """Text or bytes that are not nnabla protobuf."""


@cache
def _classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="appliance_nnabla_subset.proto", package="", syntax="proto3")
    for name, fields in MESSAGES.items():
        message = fdp.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            f = message.field.add(name=field, number=number)
            f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if kind in _TYPES:
                f.type = _TYPES[kind]
            else:
                f.type, f.type_name = _F.TYPE_MESSAGE, f".{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in MESSAGES}


def new(name: str = "NNablaProtoBuf", **fields: Any) -> Any:
    """A fresh message of the subset (``new("Shape", dim=[1, 2])``)."""
    return _classes()[name](**fields)


def parse_text(text: str, where: str) -> Any:
    """An ``NNablaProtoBuf`` from protobuf text (``.nntxt``); fields outside the subset are skipped."""
    message = new()
    try:
        text_format.Parse(text, message, allow_unknown_field=True, allow_unknown_extension=True)
    except text_format.ParseError as exc:
        msg = f"{where}: not nnabla protobuf text ({exc})"
        raise ProtoError(msg) from exc
    return message


def parse_binary(data: bytes, where: str) -> Any:
    message = new()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        msg = f"{where}: not nnabla binary protobuf ({exc})"
        raise ProtoError(msg) from exc
    return message


def to_text(message: Any) -> str:
    return text_format.MessageToString(message)
