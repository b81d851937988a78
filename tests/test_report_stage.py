"""The run report: K-ordered metric tables, the collapse sentence and the learning-curve plot."""
from __future__ import annotations

import json

from raygen.report.stage import _metric_table, build_report, plot_learning_curve
from raygen.runner import SUCCESS


def _stage(run_dir, name, metrics):
    d = run_dir / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / SUCCESS).write_text("{}")


def _row(ndcg, collapsed, same, top1):
    r = {"n": 100, "invalid": 0, "distinct_top1": top1, "coverage@10": 0.05, "same_top10_share": same,
         "collapsed": collapsed}
    for k in (1, 3, 5, 10):
        r[f"hr@{k}"], r[f"ndcg@{k}"] = ndcg * k, ndcg
    return r


def _eval_metrics(collapsed: bool) -> dict:
    split = {"raygen": _row(0.01, collapsed, 0.9 if collapsed else 0.02, 1 if collapsed else 60),
             "popularity": _row(0.02, True, 1.0, 1)}
    table = {m: {k: v for k, v in r.items() if k.startswith(("hr@", "ndcg@")) or k == "invalid"}
             for m, r in split.items()}
    return {"seconds": 1.0, "split": "test", "n_rows": 100, "invalid": 0, "table": table,
            "splits": {"valid": split, "test": split},
            "sasrec_fit": {"epochs_run": 14, "best_epoch": 4, "best_valid_ndcg@10": 0.05}}


def test_metric_table_columns_in_k_order():
    rows = {"raygen": {"ndcg@10": 0.1, "hr@10": 0.2, "invalid": 0, "hr@1": 0.0, "hr@5": 0.1, "hr@3": 0.05,
                       "ndcg@1": 0.0}}
    header = _metric_table(rows)[0]
    assert header == "| method | hr@1 | hr@3 | hr@5 | hr@10 | ndcg@1 | ndcg@10 | invalid |"


def test_report_says_when_the_model_collapsed(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    _stage(run, "eval", _eval_metrics(collapsed=True))
    build_report(run, out)
    text = (out / "report.md").read_text()
    assert "Collapsed: every user gets nearly the same ranking on the `test` split" in text
    assert "90% of the 100 rows share one top-10 list" in text
    assert "| method | hr@1 | hr@3 | hr@5 | hr@10 | ndcg@1 | ndcg@3 | ndcg@5 | ndcg@10 | invalid |" in text
    assert "| method | distinct_top1 | coverage@10 | same_top10_share | collapsed |" in text
    assert "| raygen (test) | 1 | 0.05 | 0.9 | True |" in text
    assert "best_epoch" in text  # SASRec early-stopping record


def test_report_shows_diagnostics_when_not_collapsed(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    _stage(run, "eval", _eval_metrics(collapsed=False))
    build_report(run, out)
    text = (out / "report.md").read_text()
    assert "Collapsed:" not in text and "Not collapsed" in text
    assert "| raygen (valid) | 60 | 0.05 | 0.02 | False |" in text
    assert "| popularity (test) | 1 | 0.05 | 1 | True |" in text


def test_report_draws_learning_curve(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    curve = [{"step": s, "examples": 8 * s, "loss": 3.0 / s} for s in range(1, 21)]
    for c in curve[4::5]:
        c.update({"valid_ndcg@10": c["step"] / 100, "valid_hr@10": c["step"] / 50})
    _stage(run, "sft", {"seconds": 2.0, "mode": "full", "steps": 20, "final_loss": 0.15, "learning_curve": curve})
    build_report(run, out)
    png = out / "plots" / "learning_curve_sft.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "![sft learning curve](plots/learning_curve_sft.png)" in text
    assert "learning_curve" not in text.split("## sft")[1].split("![")[0]  # not dumped as JSON


def test_plot_learning_curve_edge_cases(tmp_path):
    assert plot_learning_curve([{"step": 1}], tmp_path / "a.png", "t") is False
    assert not (tmp_path / "a.png").exists()
    # no 'examples' anywhere: steps on x; valid points only
    assert plot_learning_curve([{"step": 5, "valid_ndcg@10": 0.1}, {"step": 10, "valid_ndcg@10": 0.2}],
                               tmp_path / "b.png", "t")
    assert (tmp_path / "b.png").stat().st_size > 0


def test_a_disabled_training_stage_is_reported_as_skipped_not_missing(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    _stage(run, "align", {"seconds": 0.1, "skipped_training": "align.enabled is false", "model_dir": "lm/model"})
    summary = build_report(run, out)
    assert summary["missing"] == {}
    assert "- **skipped_training**: align.enabled is false" in (out / "report.md").read_text()


def test_report_shows_cold_warm_slices_and_search(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    m = _eval_metrics(collapsed=False)
    m["slices"] = {"raygen": {"cold": {"n": 7, "hr@1": 0.0, "ndcg@1": 0.0}, "warm": {"n": 93, "hr@1": 0.25,
                                                                                      "ndcg@1": 0.25}}}
    m["search"] = {"raygen": {"n": 40, "recall@1": 0.5, "recall@10": 0.75, "ndcg@10": 0.6, "invalid": 0},
                   "bm25": {"n": 40, "recall@1": 0.25, "recall@10": 0.5, "ndcg@10": 0.375, "invalid": 0}}
    _stage(run, "eval", m)
    build_report(run, out)
    text = (out / "report.md").read_text()
    assert "| raygen (cold, n=7) | 0 | 0 |" in text and "| raygen (warm, n=93) | 0.25 | 0.25 |" in text
    assert "Search (query -> item) on 40 test queries:" in text
    assert "| method | recall@1 | recall@10 | ndcg@10 |" in text and "| bm25 | 0.25 | 0.5 | 0.375 |" in text


def test_report_shows_intervals_and_paired_differences(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    m = _eval_metrics(collapsed=False)
    conf = {"metric": "ndcg@10", "n": 100, "resamples": 1000,
            "methods": {"raygen": {"mean": 0.01, "ci95": [0.005, 0.015]},
                        "popularity": {"mean": 0.02, "ci95": [0.01, 0.03]}},
            "paired": {"raygen - popularity": {"diff": -0.01, "ci95": [-0.02, -0.001]}}}
    m["intervals"] = {"test": {"ndcg@10": conf, "hr@10": {**conf, "metric": "hr@10"}}}
    _stage(run, "eval", m)
    build_report(run, out)
    text = (out / "report.md").read_text()
    assert "95 % intervals on the `test` split (100 rows, 1000 bootstrap resamples" in text
    assert "| method | ndcg@10 | hr@10 |" in text
    assert "| raygen | 0.0100 [0.0050, 0.0150] | 0.0100 [0.0050, 0.0150] |" in text
    assert "| raygen - popularity | -0.0100 [-0.0200, -0.0010] |" in text
    assert "![eval intervals](plots/eval_intervals.png)" in text
    assert (out / "plots" / "eval_intervals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m.pop("intervals")  # an eval stage written before intervals: no table, no error
    (run / "eval" / "metrics.json").write_text(json.dumps(m))
    build_report(run, out)
    assert "95 % intervals" not in (out / "report.md").read_text()
    assert "eval_intervals.png" not in (out / "report.md").read_text()
