"""Which launcher started how many processes, read as accelerate reads it."""

import pytest

from contrastive_diffusers import distributed

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                    "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "ACCELERATE_USE_CPU")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_run_directly_is_one_main_process(clean_env):
    assert distributed.launched_processes() == 1 and distributed.process_rank() == 0
    assert distributed.is_main_launched_process() and not distributed.needs_cpu_process_group()


@pytest.mark.parametrize("size, rank", [("WORLD_SIZE", "RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                                        ("PMI_SIZE", "PMI_RANK"), ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK")])
def test_torchrun_and_mpi_launches_are_counted(clean_env, size, rank):
    """accelerate's multi-CPU launch goes through mpirun, which sets no WORLD_SIZE: every
    process then believed it was alone and ran the whole benchmark into the same folder."""
    clean_env.setenv(size, "2")
    clean_env.setenv(rank, "1")
    assert distributed.launched_processes() == 2 and distributed.process_rank() == 1
    assert not distributed.is_main_launched_process()
    clean_env.setenv("ACCELERATE_USE_CPU", "on")  # launched for the CPU, whatever devices the host has (as accelerate reads it)
    assert distributed.needs_cpu_process_group()


def test_an_error_is_printed_by_the_first_process_only(clean_env, capsys):
    from contrastive_diffusers.cli import main

    argv = ["generate", "a red circle", "--token-groups", "[not json", "--model", "tiny-sd1"]
    clean_env.setenv("RANK", "1")
    assert main(argv) == 2 and capsys.readouterr().err == ""
    clean_env.setenv("RANK", "0")
    assert main(argv) == 2 and "error: " in capsys.readouterr().err
