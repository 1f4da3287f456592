"""Progress-wall rules: ☑ only with a proving artifact whose key number can be read."""
import json

from profiling.report.progress import DONE, TODO, wall
from profiling.report.templating import environment


def test_empty_run_dir_shows_all_items_unmeasured(tmp_path):
    tables = wall(tmp_path, environment())
    assert len(tables["checklist"]) == 7 and tables["done"] == 0
    assert all(s.mark == TODO and s.note == "not yet measured" for s in tables["checklist"])
    assert len(tables["phases"]) == 5 and len(tables["sprint"]) == 3
    assert [s.row.order for s in tables["checklist"]] == list(range(1, 8))


def test_item_ticks_with_its_key_number_and_unticks_on_bad_proof(tmp_path):
    env = {"device": "cpu", "dtype": "float32", "device_name": "cpu", "torch": "2.x"}
    (tmp_path / "env.json").write_text(json.dumps(env))
    first = wall(tmp_path, environment())["checklist"][0]
    assert first.mark == DONE and "float32" in first.note
    (tmp_path / "env.json").write_text(json.dumps({"device": "cpu"}))  # proof without its key number
    first = wall(tmp_path, environment())["checklist"][0]
    assert first.mark == TODO and "proof incomplete" in first.note


def test_non_finite_numbers_do_not_tick(tmp_path):
    second = wall(tmp_path, environment())["checklist"][1]
    proof = tmp_path / second.proof
    proof.parent.mkdir(parents=True)
    findings = {"e2e_p50_s": 1.5, "prefill_p50_s": 0.1, "decode_step_p50_s": 0.01, "output_tok_per_s_p50": 10,
                "repeats": 3, "decode_step_precision": {"half_width_ratio": 0.02, "at_cap": False}}
    proof.write_text(json.dumps(findings))
    assert wall(tmp_path, environment())["checklist"][1].mark == DONE
    proof.write_text(json.dumps({**findings, "e2e_p50_s": float("nan")}))
    assert wall(tmp_path, environment())["checklist"][1].mark == TODO
