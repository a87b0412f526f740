"""Mutation check: deliberate bugs, one at a time, each run against the tests that guard what it breaks.

Every behaviour README promises has at least one mutant here: a small, plausible bug (an edit of one line of
egnn). A mutant is *killed* when its tests fail; a surviving mutant means a promise no test holds. The list is
ours rather than a mutation-testing library's random mutants: a library's hundreds of mutants, each against a
suite of minutes, would take days on two cores; these are chosen to stand for what can go wrong.

    python scripts/mutation_check.py              # all mutants; prints the table, exits 1 if any survives
    python scripts/mutation_check.py --only loss  # the mutants whose name contains "loss"

Each mutant runs in a scratch copy of the checkout (this one is never edited), with ``-x``: the first failing
test kills it. The unmutated copy first passes every selected test, so a kill is the mutant's doing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


MUTANTS = [
    # fidelity to the original code (golden numbers)
    Mutant("fidelity: the edge update forgets each row's mass", "egnn/nn/edge_update.py",
           "e = row_normalize(torch.cat([sim, 1 - sim], -1) * prior) * mass",
           "e = row_normalize(torch.cat([sim, 1 - sim], -1) * prior)",
           ("tests/test_reference.py::test_training_step_equals_the_original",)),
    Mutant("fidelity: the node update aggregates unnormalised edges", "egnn/nn/node_update.py",
           "weights = row_normalize(e * off_diagonal(node_mask)[..., None])",
           "weights = e * off_diagonal(node_mask)[..., None]",
           ("tests/test_reference.py::test_training_step_equals_the_original",)),
    Mutant("fidelity: per-slot BatchNorm takes whole-batch statistics", "egnn/nn/slot_norm.py",
           "m.slots = max(int(slots), 1)", "m.slots = 1",
           ("tests/test_reference.py::test_training_step_equals_the_original", "tests/nn")),
    Mutant("fidelity: per-slot variance without centring", "egnn/nn/slot_norm.py",
           "var = torch.linalg.vector_norm(centred, dim=3, keepdim=True).square_().sum(0, keepdim=True) / n",
           "var = torch.linalg.vector_norm(x4, dim=3, keepdim=True).square_().sum(0, keepdim=True) / n",
           ("tests/backbones/test_backbones.py",)),
    # the loss
    Mutant("loss: positives and negatives averaged together", "egnn/losses.py",
           "per_layer = ((bce * pos).flatten(1).sum(1) / pos.sum().clamp_min(1)",
           "per_layer = ((bce * pos).flatten(1).sum(1) / (pos.sum() + neg.sum()).clamp_min(1)",
           ("tests/test_losses.py",)),
    Mutant("loss: hidden layers weighted like the last", "egnn/losses.py",
           "def layer_weights(num_layers: int, hidden: float = 0.5, last: float = 1.0)",
           "def layer_weights(num_layers: int, hidden: float = 1.0, last: float = 1.0)",
           ("tests/test_losses.py",)),
    # edge initialisation
    Mutant("edge init: query edges start at 0.6", "egnn/graph.py",
           "sim = known * same + (1 - known) * 0.5", "sim = known * same + (1 - known) * 0.6",
           ("tests/test_graph.py",)),
    Mutant("edge init (sparse): unknown edges start at 0.4", "egnn/graph.py",
           "torch.full_like(src, 0.5, dtype=torch.float)", "torch.full_like(src, 0.4, dtype=torch.float)",
           ("tests/test_graph.py", "tests/methods")),
    # semi-supervised label hiding
    Mutant("label hiding: unlabeled supports' edges carry loss", "egnn/methods/egnn.py",
           "mask = pairs & touches_query & ~hidden", "mask = pairs & touches_query",
           ("tests/methods",)),
    Mutant("label hiding: unlabeled supports vote", "egnn/methods/egnn.py",
           "onehot = onehot * dense.labeled_mask[..., None]  # only labeled supports vote",
           "onehot = onehot * dense.support_mask[..., None]",
           ("tests/methods",)),
    Mutant("label hiding: edges between unlabeled supports start from their labels", "egnn/graph.py",
           "known = (labeled[..., :, None] & labeled[..., None, :]).float()",
           "known = torch.ones_like(labeled[..., :, None] & labeled[..., None, :]).float()",
           ("tests/test_graph.py",)),
    # episodes: seeding and label permutation
    Mutant("episodes: the index does not reach the generator", "egnn/episodes.py",
           "return torch.Generator().manual_seed(self.seed * 1_000_003 + index)",
           "return torch.Generator().manual_seed(self.seed * 1_000_003)",
           ("tests/test_episodes.py",)),
    Mutant("episodes: the seed does not reach the generator", "egnn/episodes.py",
           "return torch.Generator().manual_seed(self.seed * 1_000_003 + index)",
           "return torch.Generator().manual_seed(index)",
           ("tests/test_episodes.py",)),
    Mutant("episodes: labels follow the class index", "egnn/episodes.py",
           "classes = torch.randperm(self.split.num_classes, generator=gen)[:self.way]",
           "classes = torch.randperm(self.split.num_classes, generator=gen)[:self.way].sort().values",
           ("tests/test_episodes.py",)),
    Mutant("training: random queries per batch never reach query-max", "egnn/trainer.py",
           "return int(torch.randint(low, high + 1, (1,), generator=gen))",
           "return int(torch.randint(low, high, (1,), generator=gen))",
           ("tests/test_trainer.py::test_random_queries_per_batch_are_seeded_and_in_range",)),
    # resume
    Mutant("resume: the torch RNG is not restored", "egnn/checkpoint.py",
           '    torch.set_rng_state(state["torch"])\n', "",
           ("tests/test_trainer.py::test_interrupted_run_resumes_to_the_same_model",
            "tests/test_trainer.py::test_resume_is_bitwise_with_augmentation_random_queries_and_normalisation")),
    Mutant("resume: the optimiser state is not restored", "egnn/trainer.py",
           '        self.optimizer.load_state_dict(blob["optimizer"])', "        pass",
           ("tests/test_trainer.py::test_interrupted_run_resumes_to_the_same_model",)),
    # time budget and schedules
    Mutant("time budget: the closing validation is not reserved", "egnn/trainer.py",
           "self.train_seconds + self.step_seconds + self.val_seconds > 60 * cfg.max_minutes",
           "self.train_seconds + self.step_seconds > 60 * cfg.max_minutes",
           ("tests/test_schedules.py",)),
    Mutant("schedule: cosine over half the run", "egnn/schedules.py",
           "math.cos(math.pi * min(max(progress, 0.0), 1.0))", "math.cos(math.pi * min(max(2 * progress, 0.0), 1.0))",
           ("tests/test_schedules.py",)),
    Mutant("schedule: the learning rate is never set", "egnn/trainer.py",
           '            group["lr"] = base * factor', "            pass",
           ("tests/test_schedules.py",)),
    Mutant("snapshots: a point is taken one step late", "egnn/trainer.py",
           "reached = minute <= spent or", "reached = minute < spent or",
           ("tests/test_schedules.py",)),
    # statistics
    Mutant("confidence interval: divided by n, not its root", "egnn/losses.py",
           "1.96 * float(v.std(unbiased=True)) / math.sqrt(v.numel())",
           "1.96 * float(v.std(unbiased=True)) / v.numel()",
           ("tests/test_losses.py",)),
    Mutant("pairing: per-episode results sorted before pairing", "egnn/sweep.py",
           'torch.tensor(a["per_episode_accuracy"]) - torch.tensor(b["per_episode_accuracy"])',
           'torch.tensor(sorted(a["per_episode_accuracy"])) - torch.tensor(sorted(b["per_episode_accuracy"]))',
           ("tests/test_sweep.py",)),
    # predict
    Mutant("predict: the CSV names the runner-up as the prediction", "egnn/predict.py",
           "for i, u in zip(self.labels, self.unknown)]", "for i, u in zip(self.ranked()[1][:, 1], self.unknown)]",
           ("tests/test_predict.py",)),
    Mutant("predict: uneven shots counted, not averaged", "egnn/methods/egnn.py",
           "return logits.float() / shots.to(logits.device).clamp_min(1)", "return logits.float()",
           ("tests/test_predict.py",)),
    # kNN graphs
    Mutant("kNN: no edges from the nearest labeled supports", "egnn/graph.py",
           "for count, extra in ((k, None), (k_anchor, anchors)):", "for count, extra in ((k, None),):",
           ("tests/test_graph.py", "tests/methods", "tests/test_trainer.py::test_sparse_evaluation_with_every_neighbour_matches_dense")),
    # unknowns and what to label next
    Mutant("unknowns: the threshold is the (1 - rate) quantile", "egnn/unknowns.py",
           "threshold = float(torch.quantile(known.double(), rate))",
           "threshold = float(torch.quantile(known.double(), 1 - rate))",
           ("tests/test_unknowns.py::test_calibration_reaches_its_rate_on_the_episodes_it_saw",)),
    Mutant("unknowns: a high known-score is called unknown", "egnn/predict.py",
           "return self.known < self.threshold", "return self.known > self.threshold",
           ("tests/test_unknowns.py", "tests/test_labeling.py")),
    Mutant("unknowns: ties count whole in the AUROC", "egnn/unknowns.py",
           "ranks = (below + (counts + 1) / 2)[inverse].double()", "ranks = (below + counts)[inverse].double()",
           ("tests/test_unknowns.py::test_auroc_by_hand",)),
    Mutant("unknowns: a calibration is keyed by the shots it could use", "egnn/unknowns.py",
           "return Calibration(threshold, rate, way, shot, query,", "return Calibration(threshold, rate, way, used, query,",
           ("tests/test_unknowns.py",)),
    Mutant("suggest: random picks are not seeded", "egnn/suggest.py",
           "torch.randperm(probabilities.shape[0], generator=generator)", "torch.randperm(probabilities.shape[0])",
           ("tests/test_suggest.py",)),
    Mutant("suggest: a pick does not cover its neighbours' doubt", "egnn/suggest.py",
           "doubt = doubt * (1 - a[best])", "doubt = doubt",
           ("tests/test_suggest.py",)),
    Mutant("labeling: a correction goes to the model's class", "egnn/labeling.py",
           "self.examples[label].append(path)", "self.examples[proposal.nearest].append(path)",
           ("tests/test_labeling.py",)),
    # sweeps' run directories
    Mutant("sweep: an included file's out moves the run", "egnn/sweep.py",
           '    expanded.pop("out", None)\n', "",
           ("tests/test_sweep.py",)),
    Mutant("sweep: a run's own out in a sweep file is dropped", "egnn/sweep.py",
           'return expanded if own_out is None else {**expanded, "out": own_out}', "return expanded",
           ("tests/test_sweep.py",)),
    Mutant("sweep: the sweep's directory wins over a run's own out", "egnn/sweep.py",
           'cfg = make_config({**base, "out": str(Path(spec["runs_dir"]) / name.replace("/", "_")), **overrides})',
           'cfg = make_config({**base, **overrides, "out": str(Path(spec["runs_dir"]) / name.replace("/", "_"))})',
           ("tests/test_label_ratio.py", "tests/test_compare.py")),
    Mutant("sweep: a run is paired with the first reference, whatever its episodes", "egnn/sweep.py",
           "next(((r, d) for r, d in pairs if d), (None, {}))", "next(iter(pairs))",
           ("tests/test_sweep.py::test_a_list_of_references_pairs_each_run_with_the_one_on_its_episodes",)),
    Mutant("gpu sync: the per-query graphs' node mask is read from the device", "egnn/methods/egnn.py",
           "full_mask(b * q, s + 1, device=v.device)", "v_q.new_ones(b * q, s + 1, dtype=torch.bool)",
           ("tests/test_graph.py::test_equal_sized_batches_never_read_a_mask_from_the_device",)),
    Mutant("sweep merge: a kept row is not checked against the spec", "egnn/sweep.py",
           '_check_kept(report, name, row, base, _fill_runs(wanted[name], spec["runs_dir"]))', "pass",
           ("tests/test_sweep.py::test_merge_adds_a_part_to_the_report_after_the_other_run_directories_are_gone",)),
    Mutant("sweep: a loaded model's tests are not read back", "egnn/sweep.py",
           "stored = json.loads(cache.read_text()) if cache.exists() else {}", "stored = {}",
           ("tests/test_sweep.py::test_a_list_of_references_pairs_each_run_with_the_one_on_its_episodes",)),
    Mutant("sweep: a loaded model's tests are keyed by the file's mtime", "egnn/sweep.py",
           'tag = "sha" + hashlib.file_digest(f, "sha256").hexdigest()[:16]',
           "tag = str(Path(checkpoint).stat().st_mtime_ns)",
           ("tests/test_sweep.py::test_a_list_of_references_pairs_each_run_with_the_one_on_its_episodes",)),
    Mutant("sweep: tests cached under a loaded file's mtime are not carried over", "egnn/sweep.py",
           'if key not in stored and legacy and f"{legacy}_{what}" in stored:',
           "if False:",
           ("tests/test_sweep.py::test_a_list_of_references_pairs_each_run_with_the_one_on_its_episodes",)),
    Mutant("cpu inference blocks: training-mode BatchNorm also runs a block at a time", "egnn/nn/utils.py",
           "            and not any(m.training for m in modules)):", "            ):",
           ("tests/nn/test_layers.py::test_cpu_inference_runs_rows_in_blocks_and_training_never_does",)),
    Mutant("sweep: the test cache is written once all tests are done", "egnn/sweep.py",
           "            atomic_write_text(cache, json.dumps(stored))  # each test as it ends: a stopped sweep keeps what"
           " it tested\n        results[label] = stored[key]\n",
           "        results[label] = stored[key]\n    atomic_write_text(cache, json.dumps(stored))\n",
           ("tests/test_sweep.py::test_a_stop_between_tests_keeps_the_tests_already_done",)),
    Mutant("tensorboard: a sweep run's tests stay out of its log", "egnn/sweep.py",
           "board.test(new, trainer.iteration)", "board.test({}, trainer.iteration)",
           ("tests/test_tensorboard.py",)),
    # errors
    Mutant("errors: a user error exits with 1", "egnn/cli.py",
           '            typer.echo(f"error: {exc}", err=True)\n            raise typer.Exit(2) from None',
           '            typer.echo(f"error: {exc}", err=True)\n            raise typer.Exit(1) from None',
           ("tests/test_cli.py::test_bad_flags",)),
    Mutant("errors: the memory check is skipped", "egnn/memory.py",
           "    if budget is not None and need > budget:", "    if budget is not None and need > 2 * budget:",
           ("tests/test_memory.py", "tests/test_cli.py::test_episode_batch_too_large_for_memory_names_the_fix")),
    Mutant("provenance: rewritten results files count as uncommitted code", "egnn/provenance.py",
           '":(top)", ":(top,exclude)results",', '":(top)",',
           ("tests/test_cli.py::test_uncommitted_changes_are_code_and_config_changes_not_results",)),
    Mutant("resume: the query range a checkpoint kept is ignored (today's automatic range taken)", "egnn/trainer.py",
           '                was = tuple(blob["train_queries"])', "                pass",
           ("tests/test_trainer.py::test_resume_keeps_the_query_range_the_run_was_trained_with",)),
]


def copy_checkout(dest: Path) -> None:
    """The checkout's tracked and untracked (not ignored) files, as they are now."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def pytest(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "EGNN_MALLOC": os.environ.get("EGNN_MALLOC", "")}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
                               *tests], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, "timeout"
    lines = proc.stdout.strip().splitlines() or [""]
    failed = [ln for ln in lines if ln.startswith("FAILED")]
    return proc.returncode, time.perf_counter() - start, (failed[0] if failed else lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="run the mutants whose name contains this")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    args = p.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.name]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / REPO.name
        tree.mkdir()
        copy_checkout(tree)
        for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=mutation", "-c", "user.email=m@localhost", "commit",
                                                   "-qm", "scratch copy"]):  # results record a git revision
            subprocess.run(["git", "-C", str(tree), *cmd], check=True, capture_output=True)
        if (REPO.parent / "shared").exists():  # the tests find Omniglot and the original code beside the checkout
            (Path(scratch) / "shared").symlink_to(REPO.parent / "shared")
        for m in chosen:  # every mutant's text must be there exactly once, or the list has gone stale
            count = (tree / m.file).read_text().count(m.find)
            if count != 1:
                sys.exit(f"mutant '{m.name}': its text occurs {count} times in {m.file}; update the list")
        selected = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, seconds, last = pytest(tree, selected, args.timeout * 4)
        out = last
        if code != 0:
            sys.exit(f"the unmutated checkout fails its selected tests ({last}); fix that first:\n{out}")
        print(f"unmutated: {len(selected)} test selections pass ({seconds:.0f} s)\n", flush=True)
        rows = []
        for m in chosen:
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.find, m.replace))
            try:
                code, seconds, last = pytest(tree, m.tests, args.timeout)
            finally:
                path.write_text(original)
            verdict = "killed" if code not in (0, 5) else "SURVIVED"  # 5: no test collected
            rows.append((m, verdict, seconds, last))
            print(f"{verdict:8s} {seconds:6.0f} s  {m.name}  ({last})", flush=True)
    print("\n| mutant | file | tests | result |\n|---|---|---|---|")
    for m, verdict, seconds, _ in rows:
        print(f"| {m.name} | `{m.file}` | {', '.join(f'`{t}`' for t in m.tests)} | {verdict} ({seconds:.0f} s) |")
    survived = [m.name for m, verdict, *_ in rows if verdict != "killed"]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants killed" + (f"; survived: {survived}" if survived else ""))
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
