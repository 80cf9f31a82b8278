"""Several inputs/outputs: lists by position, dicts by name (plain or as interpreters decorate it)."""
import numpy as np
import pytest

from edgeport_runtime.errors import InputError
from edgeport_runtime.manifest import TensorSpec
from edgeport_runtime.multi_io import arrange_inputs, plain_name, wrap_outputs

SPECS = [TensorSpec("image", [None, 2, 2, 1], "float32"), TensorSpec("serving_default_meta:0", [None, 3], "int8")]


def test_dict_inputs_are_ordered_by_name():
    a, b = np.zeros((1, 2, 2, 1)), np.ones((1, 3))
    got = arrange_inputs({"meta": b, "image": a}, SPECS)
    assert got[0] is a and got[1] is b


def test_list_and_single_array_keep_their_meaning():
    a, b = np.zeros((1, 2, 2, 1)), np.ones((1, 3))
    assert arrange_inputs([a, b], SPECS) == [a, b]
    assert arrange_inputs(a, SPECS[:1])[0] is a


def test_dict_with_unknown_name_lists_the_inputs():
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['img'\].*image, meta"):
        arrange_inputs({"img": 0, "meta": 1}, SPECS)


def test_dict_missing_an_input_names_it():
    with pytest.raises(InputError, match=r"\['meta'\] missing"):
        arrange_inputs({"image": 0}, SPECS)


def test_outputs_single_array_list_or_dict():
    o1, o2 = np.zeros(2), np.ones(2)
    assert wrap_outputs([o1], SPECS[:1], False) is o1
    assert wrap_outputs([o1, o2], SPECS, False) == [o1, o2]
    d = wrap_outputs([o1, o2], SPECS, True)
    assert list(d) == ["image", "meta"] and d["meta"] is o2


def test_plain_name_strips_signature_decoration():
    assert plain_name("serving_default_meta:0") == "meta" and plain_name("cls") == "cls"


def test_source_section_types_several_inputs_and_round_trips():
    from edgeport_runtime.sections import Source

    d = {"path": "/m.keras", "input_shape": [67], "inputs": [["image", [8, 8, 1]], ["meta", [3]]],
         "outputs": [["cls", [3]], ["score", [1]]], "label_output": "cls",
         "data": {"data": "/d.npz", "seed": 0, "labelled": False, "accuracy_measured": False,
                  "inputs": {"input_scale": 0.5}, "eval": None}}
    src = Source.from_dict(d, "source")
    assert src.inputs[1] == ["meta", [3]] and src.label_output == "cls" and src.extra == {}
    assert src.data.labelled is False and src.data.inputs == {"input_scale": 0.5}
    assert Source.from_dict(src.to_dict(), "source") == src


def test_source_section_refuses_malformed_tensor_list():
    from edgeport_runtime.errors import ModelLoadError
    from edgeport_runtime.sections import Source

    with pytest.raises(ModelLoadError, match="'inputs' must be a list of \\[name, \\[dims...\\]\\] pairs"):
        Source.from_dict({"inputs": [["image", "8x8"]]}, "source")
