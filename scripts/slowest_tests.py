"""Write docs/testing.md's "slowest tests" section from the output of one `bash .ci/run`.

Usage, after `bash .ci/run 2>&1 | tee ci.log` on a clean clone:
    python scripts/slowest_tests.py ci.log --commit $(git -C CLONE rev-parse --short HEAD)

The times, the test count and the wall time are read from the log (pytest's `--durations=15` block, its
summary line and .ci/run's "finished in" line); the reason each test is slow is kept below, by test name,
because only a person knows it. A slow test with no reason here is printed with "(no reason recorded)".
"""
from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
START, END = "<!-- slowest:start -->", "<!-- slowest:end -->"

WHY = {
    "test_paper_imagenet_plans_on_a_cpu_without_its_images":
        "plans the paper's ImageNet spec (20 x 20 pairs, full-size backbones) and times a step of each backbone",
    "test_a_transfer_fine_tunes_each_chosen_model_from_the_right_pretraining_trial":
        "the transfer module's fixture: digits pre-training, then 32 Fashion-MNIST fine-tuning trials",
    "test_bocb_worker_runs_the_transfer_and_resumes_after_a_kill_without_retraining":
        "a `bocb worker` process killed mid-transfer and a second one that resumes it",
    "test_two_phase_search_resumes_after_sigkill_in_its_second_phase":
        "a real `bocb run` SIGKILLed in its second search phase, then the same run resumed",
    "test_a_kill_during_a_rung_resumes_without_retraining_finished_rungs":
        "a halving search killed mid-rung (resnet50, so the kill lands inside a trial), then resumed",
    "test_killed_worker_trial_is_reclaimed_and_resumed_from_checkpoint":
        "a `bocb worker` SIGKILLed mid-trial; a second worker reclaims the trial after its lease expires",
    "test_bocb_report_of_a_store_is_the_report_bocb_run_wrote":
        "the report tests' shared run: 16 trials and its report, made once for the session",
    "test_a_users_optimizer_under_bocb_worker_and_a_cache_made_by_another_version_retrained":
        "`bocb check` trains a reference panel and the user's optimizer through `bocb worker` processes",
    "test_a_users_backbone_runs_the_gauntlet_and_a_second_check_reuses_the_reference":
        "`bocb check` trains the reference panel and the user's backbone, then checks again from the cache",
    "test_sigkill_mid_sweep_then_resume":
        "a real `bocb run` SIGKILLed mid-sweep, then resumed to identical results",
    "test_export_then_import_gives_identical_results_and_a_second_import_adds_nothing":
        "the shared finished tiny store (8 trials with kept weights), made once for the session",
    "test_stopped_run_releases_its_trial_which_resumes_from_its_checkpoint":
        "a Ray cluster started by `bocb run --executor ray`, interrupted with Ctrl-C and resumed",
    "test_ray_executor_matches_local_bitwise":
        "the same sweep under a Ray cluster and the local executor, compared bit for bit",
    "test_three_workers_run_every_trial_exactly_once":
        "three `bocb worker` processes on one PostgreSQL store",
    "test_early_stopping_on_digits_records_the_stopped_configuration":
        "an early-stopping search trained on digits to the point where it stops configurations",
    "test_a_module_class_optimizer_trains_under_ray":
        "a Ray cluster whose workers import a user's optimizer module",
}

DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")
SUMMARY = re.compile(r"^(\d+) passed.* in ([\d.]+)s")
FINISHED = re.compile(r"== finished in (\d+) s")


def read_log(text: str) -> tuple[list[tuple[float, str, str]], str, str]:
    rows, summary, wall = [], "", ""
    in_block = False
    for line in text.splitlines():
        if "slowest" in line and "durations" in line:
            in_block = True
            continue
        match = DURATION.match(line) if in_block else None
        if match:
            rows.append((float(match[1]), match[2], match[3]))
        elif in_block and rows:
            in_block = False
        if m := SUMMARY.match(line.strip("= ")):
            summary = f"{m[1]} tests passed in {float(m[2]):.0f} s of pytest"
        if m := FINISHED.search(line):
            wall = f"{m[1]} s for the whole of `bash .ci/run` (set-up included)"
    if not rows or not summary:
        raise SystemExit("error: no pytest durations block or summary line in the log")
    return rows, summary, wall


def test_name(node: str) -> str:
    return node.split("::")[-1].split("[")[0].split("@")[0]


def section(rows: list[tuple[float, str, str]], summary: str, wall: str, commit: str, day: str) -> str:
    head = f"At {commit}, {day}, on this project's 2-core CI machine: {summary}; {wall}." if wall else \
        f"At {commit}, {day}, on this project's 2-core CI machine: {summary}."
    lines = [head, "", "| seconds | phase | test | why it is slow |", "|---:|---|---|---|"]
    for seconds, phase, node in rows:
        why = WHY.get(test_name(node), "(no reason recorded)")
        lines.append(f"| {seconds:.1f} | {phase} | `{node}` | {why} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args()
    rows, summary, wall = read_log(args.log.read_text())
    doc = DOC.read_text()
    before, rest = doc.split(START)
    _, after = rest.split(END)
    DOC.write_text(f"{before}{START}\n{section(rows, summary, wall, args.commit, args.date)}\n{END}{after}")
    print(f"wrote {len(rows)} slowest tests into {DOC}")


if __name__ == "__main__":
    main()
