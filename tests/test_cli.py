"""The ``egnn`` command end to end, as a user runs it, on real Omniglot: a real process where the console entry
point itself is the subject (a first training, a usage error with no traceback), the same ``main`` in this
process for the rest (:func:`tests.conftest.cli`), which spares ~5 s of importing torch per call."""
import json
import subprocess

import pytest
import torch

from tests.conftest import NO_NETWORK, assert_user_error, cli, egnn


def test_train_and_eval_on_real_omniglot(omniglot_root, tmp_path):
    out = tmp_path / "run"
    proc = egnn("train", "--dataset", "omniglot", "--data-root", omniglot_root, "--way", 5, "--shot", 1,
                "--iterations", 4, "--tasks-per-batch", 4, "--val-every", 2, "--val-episodes", 5,
                "--test-episodes", 20, "--test-queries", "1,3", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "omniglot/test 5-way 1-shot, 1 queries/class, transductive" in proc.stdout
    assert "3 queries/class" in proc.stdout
    summary = json.loads((out / "results.json").read_text())
    assert summary["command"].startswith("egnn train --dataset omniglot")
    assert [t["protocol"]["query"] for t in summary["test"]] == [1, 3]
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]

    ev = cli("eval", "--checkpoint", out / "best.pt", "--data-root", omniglot_root, "--episodes", 20,
              "--query", 3, "--output", tmp_path / "eval.json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == summary["test"][1]["accuracy"]
    nt = cli("eval", "--checkpoint", out / "best.pt", "--data-root", omniglot_root, "--episodes", 5,
              "--no-transductive")
    assert nt.returncode == 0 and "non-transductive" in nt.stdout

    again = cli("train", "--dataset", "omniglot", "--iterations", 4, "--out", out)
    assert_user_error(again, "--resume")
    resumed = cli("train", "--dataset", "omniglot", "--data-root", omniglot_root, "--way", 5, "--shot", 1,
                   "--iterations", 6, "--tasks-per-batch", 4, "--val-every", 2, "--val-episodes", 5,
                   "--test-episodes", 20, "--out", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


@pytest.mark.parametrize("args, needles", [
    (["--way", 2000], ["fewer than way=2000"]),
    (["--shot", 15, "--query", 10], ["fewer than shot + query = 25"]),
])
def test_impossible_episodes_on_omniglot(omniglot_root, tmp_path, args, needles):
    proc = cli("train", "--dataset", "omniglot", "--data-root", omniglot_root, "--out", tmp_path / "r", *args)
    assert_user_error(proc, *needles)
    assert not (tmp_path / "r").exists()  # nothing half-written


@pytest.mark.parametrize("args, needles", [
    (["--dataset", "imagenet22k"], ["unknown dataset 'imagenet22k'", "glyphs"]),
    (["--way", 0], ["way must be at least"]),
    (["--label-ratio", 1.5], ["label-ratio"]),
    (["--device", "tpu"], ["device must be auto, cpu, cuda or cuda:N"]),
    (["--device", "cuda"], ["CUDA is not available", "--device cpu"]),  # the CPU suite hides any GPU
    (["--image-size", 16], ["too small for Conv-4", "--conv4-padding same"]),
    (["--encoder-norm", "group"], ["encoder-norm must be slot or batch"]),
    (["--query", 5, "--query-max", 3], ["query-max must be -1 (auto), 0 (fixed queries) or at least query=5"]),
    (["--augment", "rotate"], ["augment must be auto, none, crop or crop-flip"]),
    (["--normalize", "yes"], ["normalize must be auto, on or off"]),
    (["--knn", -1], ["knn must be 0"]),
    (["--layers", 0], ["layers must be at least 1"]),
    (["--iterations", -5], ["iterations must be at least 1"]),
    (["--backbone", "resnet12-mtl"], ["needs --backbone-checkpoint"]),
    (["--widths", "8,x"], ["widths must be positive integers"]),
    (["--backbone", "vgg99"], ["unknown backbone 'vgg99'"]),
])
def test_bad_flags(tmp_path, args, needles):
    assert_user_error(cli("train", "--out", tmp_path / "r", *args), *needles)


@pytest.mark.parametrize("args, needles", [
    (["train", "--eval-batches", 3], ["No such option: --eval-batches", "egnn train --help"]),
    (["train", "--way", "five"], ["Invalid value for '--way'"]),
    (["eval"], ["Missing option '--checkpoint'"]),
    (["frobnicate"], ["No such command"]),
])
def test_usage_errors_are_one_line(args, needles):
    assert_user_error(cli(*args), *needles)


def test_the_console_entry_point_answers_a_usage_error_in_one_line():
    assert_user_error(egnn("train", "--way", "five"), "Invalid value for '--way'")


# a closed local port stands in for "no network", wherever the tests run


def test_missing_data_without_network(tmp_path):
    env = {"EGNN_DATA": str(tmp_path / "empty"), "EGNN_CACHE": str(tmp_path / "cache"), **NO_NETWORK}
    proc = cli("train", "--dataset", "omniglot", "--out", tmp_path / "r", env=env)
    assert_user_error(proc, "Omniglot not found", "--data-root")


def test_a_cache_does_not_stand_in_for_missing_data(omniglot_root, tmp_path):
    from egnn.data.omniglot import load_characters
    from egnn.data.paths import cache_dir

    load_characters(omniglot_root)  # decoded from the real copy into the shared cache (or already there)
    assert list(cache_dir().glob("omniglot_28_*.pt"))
    env = {"EGNN_DATA": str(tmp_path / "gone"), **NO_NETWORK}
    assert_user_error(cli("train", "--dataset", "omniglot", "--out", tmp_path / "r", env=env), "Omniglot not found")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_bad_config_files(tmp_path):
    (tmp_path / "typo.yaml").write_text("wayy: 5\n")
    assert_user_error(cli("train", "--config", tmp_path / "typo.yaml"), "unknown config key(s) wayy")
    (tmp_path / "broken.yaml").write_text("way: [5\n")
    assert_user_error(cli("train", "--config", tmp_path / "broken.yaml"), "not valid YAML")
    (tmp_path / "typed.yaml").write_text("way: five\n")
    assert_user_error(cli("train", "--config", tmp_path / "typed.yaml"), "'way' expects int")
    (tmp_path / "twice.yaml").write_text("way: 5\nshot: 1\nway: 20\n")  # PyYAML alone would keep way: 20
    assert_user_error(cli("train", "--config", tmp_path / "twice.yaml", "--out", tmp_path / "r"),
                      "key 'way' appears twice at line 3")
    (tmp_path / "spec.yaml").write_text("models: {}\nmodels: {}\n")
    assert_user_error(cli("compare", "--config", tmp_path / "spec.yaml"), "key 'models' appears twice")
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"\x80\x02not a checkpoint at all")
    assert_user_error(cli("eval", "--checkpoint", tmp_path / "best.pt"), "truncated or corrupt")
    assert_user_error(cli("eval", "--checkpoint", tmp_path / "nope.pt"), "not found")


def test_datasets_lists_what_is_where(omniglot_root):
    proc = cli("datasets", "--data-root", omniglot_root)
    assert proc.returncode == 0
    assert "glyphs     embedded" in proc.stdout and f"present at {omniglot_root}/omniglot-py" in proc.stdout


def test_episode_batch_too_large_for_memory_names_the_fix(tmp_path):
    proc = cli("train", "--way", 5, "--shot", 5, "--tasks-per-batch", 40, "--out", tmp_path / "r",
                env={"EGNN_MEMORY_GB": "0.01"})
    assert_user_error(proc, "nodes as dense graphs needs about", "lower --tasks-per-batch", "--knn 20")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_allocation_failure_mid_run_names_the_fix(tmp_path, monkeypatch):
    from egnn.config import make_config
    from egnn.errors import UserError
    from egnn.methods.egnn import EGNNMethod
    from egnn.trainer import Trainer
    from tests.conftest import SPLITS

    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 99999999999 bytes")

    trainer = Trainer(make_config(way=3, shot=1, query=2, eval_query=2, iterations=2, tasks_per_batch=2,
                                  embedding=16, node_features=8, edge_features=8, out=str(tmp_path / "r")), SPLITS)
    monkeypatch.setattr(EGNNMethod, "forward", fail)
    with pytest.raises(UserError, match="out of memory running an episode batch.*lower --tasks-per-batch.*--knn"):
        trainer.step()


def test_allocation_failure_in_the_backward_pass_names_the_fix_too(tmp_path, monkeypatch):
    """The backward pass holds as much again as the forward: a real 20-way 5-shot run ran out of memory there and
    ended in a traceback. Any allocation failure of the step is the one-line error."""
    from egnn.config import make_config
    from egnn.errors import UserError
    from egnn.trainer import Trainer
    from tests.conftest import SPLITS

    trainer = Trainer(make_config(way=3, shot=1, query=2, eval_query=2, iterations=2, tasks_per_batch=2,
                                  embedding=16, node_features=8, edge_features=8, out=str(tmp_path / "r")), SPLITS)

    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch.Tensor, "backward", fail)
    with pytest.raises(UserError, match="out of memory running an episode batch.*lower --tasks-per-batch"):
        trainer.step()


@pytest.mark.parametrize("markexpr, gpu", [("cuda", True), ("not cuda", False), ("", False),
                                           ("cuda and not slow", True), ("slow", False)])
def test_the_cuda_marker_switches_the_suite_both_ways(markexpr, gpu):
    """-m cuda runs the GPU tests with the GPU visible; any other selection, -m "not cuda" included, hides it."""
    from tests.conftest import selects_gpu_tests

    assert selects_gpu_tests(markexpr) is gpu


def test_provenance_names_the_command_the_revision_and_uncommitted_changes():
    from egnn.provenance import provenance

    made = provenance("python scripts/bench_speed.py", ["--kinds", "graph", "--out", "a b.json"])
    assert made["command"] == "python scripts/bench_speed.py --kinds graph --out 'a b.json'"
    if made["git_revision"] is not None:  # a git checkout (CI's is one)
        assert len(made["git_revision"]) == 40 and isinstance(made["uncommitted_changes"], bool)


def test_uncommitted_changes_are_code_and_config_changes_not_results(tmp_path):
    """A result made while other results files were rewritten still ran the committed code; a changed config did not."""
    from egnn.provenance import uncommitted_changes

    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,
                                    check=True, capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("{}")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("way: 5")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    assert uncommitted_changes(tmp_path) is False
    (tmp_path / "results" / "a.json").write_text('{"accuracy": 1}')
    assert uncommitted_changes(tmp_path / "configs") is False  # from any folder of the checkout
    (tmp_path / "configs" / "a.yaml").write_text("way: 20")
    assert uncommitted_changes(tmp_path / "results") is True
    assert uncommitted_changes(tmp_path.parent / "nowhere") is None


#: a valid value other than the default for every config key, as a flag would give it
FLAG_VALUES = dict(
    dataset="omniglot", data_root="/data", image_size=32, normalize="on", augment="crop", way=7, shot=2, query=3,
    query_max=0, eval_query=4, test_way=6, label_ratio=0.5, unlabeled="drop", transductive=False, model="gnn",
    backbone="resnet12", widths="8,8,8,8", backbone_checkpoint="pre.pt", train_ss=False, hard_tasks=True,
    inner_steps=3, inner_lr=0.5, inner_init="prototypes", embedding=64, layers=2, node_features=32, edge_features=48,
    dropout=0.2, encoder_dropout=0.3, encoder_norm="batch", conv4_padding="same", graph_slope=0.1, knn=5,
    iterations=7, tasks_per_batch=9, lr=0.01, weight_decay=0.001, lr_halve_every=11, lr_schedule="cosine",
    patience=3, max_minutes=2.5, snapshot_minutes="1,2", val_every=13, val_episodes=14, test_episodes=15,
    eval_batch=16, seed=17, eval_seed=18, device="cpu", data_on_device="off", deterministic=True, precision="bf16",
    threads=1, log="tensorboard", out="elsewhere")


def test_every_train_flag_reaches_its_config_key(monkeypatch):
    """Each flag alone, in process, with the training API replaced: the config it builds holds the flag's value
    (a flag declared but dropped, or routed to another key, fails here)."""
    import typer.main

    import egnn.trainer
    from egnn.cli import app
    from egnn.config import Config
    from dataclasses import fields

    assert set(FLAG_VALUES) == {f.name for f in fields(Config)}  # a new key needs a value here
    seen = []
    monkeypatch.setattr(egnn.trainer, "train", lambda cfg, **kw: seen.append(cfg) or [])
    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    for name, value in FLAG_VALUES.items():
        opt = params[name]
        args = [opt.opts[0] if value else opt.secondary_opts[0]] if isinstance(value, bool) else [opt.opts[0], value]
        if name == "knn":
            args += ["--model", "egnn"]
        proc = cli("train", *args)
        assert proc.returncode == 0, (name, proc.stderr)
        assert getattr(seen[-1], name) == value, name


def test_every_config_key_is_a_train_flag_declared_once_for_all_commands():
    import typer.main

    from egnn.cli import CONFIG_OPTIONS, app
    from egnn.config import Config
    from dataclasses import fields

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    flags = {name: {p.name: p for p in cmd.params if p.param_type_name == "option"} for name, cmd in commands.items()}
    assert set(CONFIG_OPTIONS) == {f.name for f in fields(Config)} <= set(flags["train"])
    for name in ("device", "precision", "seed", "threads", "val_every", "out"):  # same flag, same help everywhere
        helps = {flags[c][name].help for c in ("train", "pretrain", "meta-transfer")}
        assert len(helps) == 1, (name, helps)
    assert flags["train"]["transductive"].secondary_opts == ["--no-transductive"]


def test_meta_transfer_defaults_sit_under_the_yaml_config(tmp_path):
    (tmp_path / "mt.yaml").write_text("out: from_yaml\nhard_tasks: false\n")
    proc = cli("meta-transfer", "--pretrained", tmp_path / "missing.pt", "--config", tmp_path / "mt.yaml")
    assert_user_error(proc, "missing.pt")  # the YAML's keys were read (no unknown key), then the checkpoint
