"""The recipe plan: --recipes and [convert.options] parsed once into picklable jobs, each with its exporter."""
from __future__ import annotations

import pickle

import pytest

from edgeport.convert import exporters
from edgeport.convert.recipes import RECIPES, Recipe, RecipeJob, plan_recipes
from edgeport_runtime.errors import UsageError


def test_plan_all_is_every_recipe_not_explicit():
    plan = plan_recipes("all")
    assert plan.recipes == list(Recipe) and plan.explicit is False
    assert plan_recipes(" all ").explicit is False and plan_recipes(["all"]).recipes == list(Recipe)


def test_plan_named_recipes_in_table_order_explicit():
    plan = plan_recipes("onnx-fp32, tflite-int8")
    assert plan.recipes == [Recipe.TFLITE_INT8, Recipe.ONNX_FP32] and plan.explicit is True
    # a TOML list gives the same plan as the comma-separated string
    assert plan_recipes(["onnx-fp32", "tflite-int8"]) == plan


def test_plan_job_carries_options_gate_and_file_name():
    plan = plan_recipes("tflite-int8-pruned", {"tflite-int8-pruned": {"sparsity": "0.5"}})
    (job,) = plan.jobs
    assert job.options["sparsity"] == 0.5 and job.options["epochs"] == RECIPES[job.recipe].options["epochs"]
    assert job.gate == RECIPES[Recipe.TFLITE_INT8_PRUNED].gate
    assert job.filename == "tflite-int8-pruned.tflite" and job.name == "tflite-int8-pruned"


def test_plan_job_pickles_unchanged():
    # the pipeline sends jobs to spawned child processes, which unpickle them
    for job in plan_recipes("all").jobs:
        assert pickle.loads(pickle.dumps(job)) == job


def test_plan_unknown_recipe_rejected_with_hint():
    with pytest.raises(UsageError, match=r"unknown recipe 'tflite-int9'\. Did you mean 'tflite-int8'"):
        plan_recipes("tflite-int8,tflite-int9")


def test_plan_empty_list_rejected():
    with pytest.raises(UsageError, match=r"^--recipes is empty; name at least one recipe or 'all'\.$"):
        plan_recipes(" , ")


def test_plan_unknown_option_rejected():
    with pytest.raises(UsageError, match=r"unknown option for recipe tflite-int8-pruned 'sparsty'"):
        plan_recipes("tflite-int8-pruned", {"tflite-int8-pruned": {"sparsty": 0.8}})


def test_plan_options_for_unconverted_recipe_rejected():
    with pytest.raises(UsageError, match=r"options given for recipe 'tflite-int8-qat', which is not being converted "
                                         r"\(converting: tflite-int8\)\."):
        plan_recipes("tflite-int8", {"tflite-int8-qat": {"epochs": 1}})


def test_every_recipe_has_an_exporter():
    assert set(exporters.EXPORTERS) == set(Recipe)
    assert all(callable(f) for f in exporters.EXPORTERS.values())


def test_job_of_uses_table_defaults():
    job = RecipeJob.of(Recipe.TFLITE_FP32)
    assert job.options == {} and job.spec is RECIPES[Recipe.TFLITE_FP32]
