"""The `mesh-t5` dispatcher and the gin flag conventions shared by every subcommand."""

import subprocess
import sys

import gin
import pytest
from conftest import run_script

from mesh_t5 import cli, gin_utils
from mesh_t5.errors import UserError


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "infer", "export", "convert", "plan", "tasks", "c4", "demo"):
        assert f"  {name} " in out


def test_unknown_command_is_one_line(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mesh-t5: error: unknown command 'trian'") and "\n" not in err


def test_console_script_entry_point():
    # The installed `mesh-t5` script and `python -m mesh_t5.cli` run the same main.
    result = subprocess.run([sys.executable, "-m", "mesh_t5.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: mesh-t5 COMMAND" in result.stdout


def test_split_gin_bindings_quotes_bare_strings():
    rest, bindings = gin_utils.split_gin_bindings(
        ["--gin.MODEL_DIR=/tmp/run", "--gin.TRAIN_STEPS=100", "--gin.X", "'a'", "--other", "--gin.Y=[1, 2]"]
    )
    assert rest == ["--other"]
    assert bindings == ["MODEL_DIR = '/tmp/run'", "TRAIN_STEPS = 100", "X = 'a'", "Y = [1, 2]"]


def test_gin_binding_without_value():
    with pytest.raises(UserError, match="--gin.X has no value"):
        gin_utils.split_gin_bindings(["--gin.X"])


def test_missing_gin_file_is_named():
    with pytest.raises(UserError, match="gin file 'models/t5_huge.gin' not found"):
        gin_utils.parse_gin(["models/t5_huge.gin"], [])


def test_unknown_configurable_is_one_line():
    gin.clear_config()
    try:
        with pytest.raises(UserError) as info:
            gin_utils.parse_gin(["models/tiny.gin"], ["T5Config.d_modle = 3"], finalize=False)
    finally:
        gin.clear_config()
    assert "d_modle" in str(info.value) and "\n" not in str(info.value)


def test_required_macro_is_reported_by_name():
    gin.clear_config()
    try:
        gin_utils.parse_gin([], ["TRAIN_STEPS = 5"], finalize=False)
        assert gin_utils.query_macro("TRAIN_STEPS") == 5
        with pytest.raises(UserError, match="required gin macro MODEL_DIR is not set; pass --gin.MODEL_DIR"):
            gin_utils.query_macro("MODEL_DIR")
    finally:
        gin.clear_config()


def test_tasks_lists_the_catalogue(capsys):
    assert cli.main(["tasks", "^glue_(cola|rte)"]) == 0
    out = capsys.readouterr().out
    assert "2 tasks" in out and "glue_cola_v002" in out and "glue_rte_v002" in out
    assert "TfdsSource glue/cola:1.0.0  splits: train, validation, test" in out  # T5's TFDS version
    assert "super_glue_rte" not in out


def test_tasks_bad_module_is_one_line(capsys):
    assert cli.main(["tasks", "--module", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--module 'no_such_module_xyz' cannot be imported" in err and "\n" not in err


@pytest.mark.parametrize("command", ["train", "eval", "infer", "export"])
def test_device_commands_take_multi_host_flags(command, capsys):
    # Half a multi-host launch is refused before anything touches a device.
    assert cli.main([command, "--num_processes=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "multi-host launch needs all of coordinator_address, num_processes and process_id" in err
    assert "\n" not in err


def test_parse_gin_starts_from_a_clean_config():
    # A command that finalized (locked) gin must not break the next command in the same process.
    gin_utils.parse_gin(["models/tiny.gin"], [], finalize=True)
    gin_utils.parse_gin(["models/t5_small.gin"], [], finalize=False)
    assert gin.query_parameter("T5Config.d_model") == 512
    gin.clear_config()


def test_unset_macro_in_a_gin_file_is_named():
    gin.clear_config()
    try:
        with pytest.raises(UserError, match="gin macro NOT_SET is not set; pass --gin.NOT_SET=VALUE"):
            gin_utils.parse_gin([], ["T5Config.d_model = %NOT_SET"], finalize=True)
    finally:
        gin.clear_config()


def test_configurables_register_after_an_earlier_command_finalized_gin():
    # A command's first import of mesh_t5.data (or the demo tasks, or gin_utils) may come after an earlier
    # command in the same process locked gin's config: registering must not fail there.
    out = run_script("import_after_gin_finalize.py", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "d", "3"]
