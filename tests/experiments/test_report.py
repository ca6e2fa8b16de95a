"""rhvae.experiments.report: the Markdown results report built from a run folder's results.json files."""

import json

import pytest

from rhvae.experiments import report


def results(experiment="generation_5", quick=False):
    over_seeds = {
        "VAE": {"in_class_fraction": {"mean": 0.7, "std": 0.1, "values": {"0": 0.6, "1": 0.8}}},
        "RHVAE": {"in_class_fraction": {"mean": 0.95, "std": None, "values": {"0": 0.95}}},
    }
    rhvae = {"eps_lf": 0.1, "n_lf": 10, "beta_zero": 0.3, "regularization": 0.1, "temperature": 1.0}
    return {
        "experiment": experiment,
        "status": "ok",
        "quick": quick,
        "problems": [],
        "parameters": {"epochs": 1000, "seeds": [0, 1], "data_seed": 0},
        "results": {
            "quality_over_seeds": over_seeds,
            "quality_real_test_digits": {"in_class_fraction": 1.0},
            "generation": {"0": {"RHVAE": {"sampler": "riemannian_hmc", "target": "HMC on sqrt det G^-1"}}},
        },
        "verdict": {
            "claim": "RHVAE samples are better",
            "verdict": "partly",
            "checks": {"a": True, "b": False},
            "agree": 1,
            "total": 2,
            "every_model_trained": True,
        },
        "models": {
            "rhvae_seed0": {
                "model": "rhvae",
                "seed": 0,
                "status": "ok",
                "config": rhvae,
                "source": "shipped",
                "epochs": 1000,
                "final_train_loss": 120.0,
                "final_test_loss": 150.0,
                "final_step_size": 0.1,
                "kappa": 0.12,
                "objective": "elbo",
            },
            "rhvae_seed1": {
                "model": "rhvae",
                "seed": 1,
                "status": "ok",
                "config": rhvae,
                "source": "trained",
                "epochs": 1000,
                "final_train_loss": 121.0,
                "final_test_loss": 160.0,
                "final_step_size": 2e-5,
                "kappa": 2650.0,
                "objective": "elbo",
            },
        },  # fmt: skip
        "figures": ["samples.png"],
        "provenance": {"threads": 1, "timings_seconds": {"total": 12.0}, "environment": {"torch": "2.14.1"}},
    }


def test_report_has_claim_verdict_tables_regimes_figures_and_command(tmp_path):
    (tmp_path / "generation_5").mkdir()
    (tmp_path / "generation_5" / "results.json").write_text(json.dumps(results()))
    path = report.write_report(tmp_path, latest=tmp_path / "latest" / "README.md")
    text = path.read_text()
    assert "| generation_5 | partly | 1/2 | ok |" in text
    assert "**Paper:** RHVAE samples are better" in text and "- ✅ a" in text and "- ❌ b" in text
    assert "| VAE | 0.7 ± 0.1 <sub>(0.6, 0.8)</sub> |" in text  # mean ± std with the per-seed values
    assert "| RHVAE | 0.95 |" in text  # one seed: no std
    assert "eps_lf cap (metric ≈ λI)" in text and "stability bound" in text  # the two training regimes
    assert "![samples.png](generation_5/samples.png)" in text
    assert "`./run_all.sh --only generation_5`" in text and "HMC on sqrt det G^-1" in text
    assert "1 shipped, 1 trained" in text
    latest = (tmp_path / "latest" / "README.md").read_text()
    assert "![samples.png](../generation_5/samples.png)" in latest  # links from the copy's folder into the run


def test_the_environment_line_names_the_cpu_where_the_run_recorded_it(tmp_path):
    (tmp_path / "generation_5").mkdir()
    recorded = results()
    recorded["provenance"]["environment"].update(cpu="AMD EPYC", cpu_capability="AVX512")
    (tmp_path / "generation_5" / "results.json").write_text(json.dumps(recorded))
    line = next(x for x in report.build_report(tmp_path).splitlines() if x.startswith("Environment:"))
    assert line.endswith("git unknown, CPU AMD EPYC (AVX512).")
    (tmp_path / "generation_5" / "results.json").write_text(json.dumps(results()))  # a run from before it was recorded
    line = next(x for x in report.build_report(tmp_path).splitlines() if x.startswith("Environment:"))
    assert line.endswith("git unknown.") and "CPU" not in line


def test_quick_runs_are_flagged_and_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "generation_5").mkdir()
    (tmp_path / "generation_5" / "results.json").write_text(json.dumps(results(quick=True)))
    assert "**Quick mode**" in report.build_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="results.json"):
        report.build_report(tmp_path / "nothing")


def diagnostics(displacement, gain, step, kappa, contrast, flags):
    return {"displacement": displacement, "flow_gain": gain, "flow_gain_sem": 0.3, "step": step, "kappa": kappa,
            "contrast": contrast, "flags": flags}  # fmt: skip


def test_report_states_what_the_flow_and_the_metric_do(tmp_path):
    from rhvae.evaluation.diagnostics import FlowDiagnostics

    data = results()
    frozen = FlowDiagnostics("RHVAE", 0.05, -0.3, 0.01, 2e-5, 2650.0, 3.1, 30, 20).to_dict()
    flat = FlowDiagnostics("RHVAE", 4.2, 9.5, 0.1, 0.1, 0.12, 0.03, 30, 20).to_dict()
    data["models"]["rhvae_seed1"]["diagnostics"] = frozen
    data["models"]["rhvae_seed0"]["diagnostics"] = flat
    data["models"]["hvae_seed0"] = {
        "model": "hvae", "seed": 0, "status": "ok", "config": {"eps_lf": 0.01}, "source": "shipped",
        "diagnostics": diagnostics(1.5, 4.0, 0.01, None, None, []),
    }  # fmt: skip
    (tmp_path / "generation_5").mkdir()
    (tmp_path / "generation_5" / "results.json").write_text(json.dumps(data))
    text = report.build_report(tmp_path)
    assert "**What the flow and the metric do**" in text
    assert "| RHVAE | 1 | 1 | 0.05 | -0.3 ± 0.01 | 2e-05 | 2.65e+03 | 3.1 | the flow barely moves" in text
    assert "this RHVAE behaves like a VAE; the flow lowers the ELBO" in text
    assert "| RHVAE | 0 | 1 | 4.2 | +9.5 ± 0.1 | 0.1 | 0.12 | 0.03 | the metric is flat (≈ λI" in text
    assert "this RHVAE behaves like an HVAE |" in text
    assert "| HVAE | 0 | – | 1.5 | +4 ± 0.3 | 0.01 | – | – | the flow moves |" in text
    table = report.diagnostics_table(data["models"])
    assert table.count("\n") == 4  # header, rule and the three models with diagnostics
    assert report.diagnostics_table(results()["models"]) is None  # nothing recorded: no table


def test_rhvae_criteria_count_met_undecided_and_missed_models():
    def rhvae_model(displacement, gain, sem, contrast):
        d = {"displacement": displacement, "flow_gain": gain, "flow_gain_sem": sem, "contrast": contrast}
        return {"model": "rhvae", "status": "ok", "diagnostics": d}

    models = {
        "good": rhvae_model(1.5, 3.0, 0.5, 2.0),
        "noisy": rhvae_model(1.5, 0.2, 0.6, 2.0),  # 1 nat within two standard errors: undecided
        "costly": rhvae_model(1.5, -2.0, 0.3, 2.0),  # clearly below 1 nat
        "flat": rhvae_model(1.5, 3.0, 0.5, 0.1),
        "hvae": {"model": "hvae", "status": "ok", "diagnostics": {"displacement": 0.1}},
    }
    text = report.rhvae_criteria(models)
    assert "**1/4** models meet all three" in text
    assert "undecided (1 nat within two standard errors of the gain): noisy (gain +0.2 ± 0.6)" in text
    assert "**not met**: costly (flow_gain -2 < 1), flat (contrast 0.1 < 0.5)" in text
    assert report.rhvae_criteria({"hvae": models["hvae"]}) is None


def test_the_report_does_not_depend_on_the_order_models_were_trained_or_reused_in(tmp_path):
    """results.json lists models in the order they were trained or loaded, which differs between a run that
    trains and one that reuses; the report's tables come in one fixed order all the same."""
    from rhvae.evaluation.diagnostics import FlowDiagnostics

    data = results()
    for label in list(data["models"]):
        data["models"][label]["diagnostics"] = FlowDiagnostics("RHVAE", 1.5, 2.0, 0.5, 0.02, 3.0, 2.0, 30, 20).to_dict()
    reversed_data = {**data, "models": dict(reversed(list(data["models"].items())))}
    texts = []
    for i, d in enumerate((data, reversed_data)):
        folder = tmp_path / str(i) / "generation_5"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(d))
        texts.append(report.build_report(folder.parent).replace(f"`{i}`", "`run`"))
    assert list(data["models"]) != list(reversed_data["models"])
    assert texts[0] == texts[1]


def test_seed_table_shows_equal_values_with_a_zero_std_not_rounding_noise():
    from rhvae.experiments.report import seed_table

    noisy = {"mean": 0.887, "std": 1.4e-16, "values": {0: 0.887, 1: 0.887, 2: 0.887}}
    spread = {"mean": 0.5, "std": 0.1, "values": {0: 0.4, 1: 0.5, 2: 0.6}}
    table = seed_table({"real": {"precision": noisy}, "RHVAE": {"precision": spread}})
    assert "0.887 ± 0 <sub>" in table and "e-16" not in table
    assert "0.5 ± 0.1 <sub>(0.4, 0.5, 0.6)</sub>" in table


def test_an_analysis_names_the_experiment_of_every_model_it_judged():
    from rhvae.experiments.report import model_name, ordered, stability_table

    record = {"model": "rhvae", "seed": 0, "status": "ok", "config": {"temperature": 0.6, "eps_lf": 0.1}, "epochs": 9}
    models = {
        "generation_7_classes_rhvae_seed0": dict(record),
        "reconstruction_rhvae_seed0": {**record, "config": {"temperature": 1.0, "eps_lf": 0.1}},
        "rhvae_seed0": dict(record),  # an experiment's own model: no prefix, no experiment named
    }
    assert model_name("rhvae_seed0", record) == "RHVAE"
    assert model_name("generation_7_classes_rhvae_seed0", record) == "RHVAE (generation_7_classes)"
    assert [label for label, _ in ordered(models)] == [
        "rhvae_seed0", "reconstruction_rhvae_seed0", "generation_7_classes_rhvae_seed0"
    ]  # fmt: skip
    table = stability_table(models)
    assert table.index("| RHVAE (reconstruction) | 0 | 1 |") < table.index("| RHVAE (generation_7_classes) | 0 | 0.6 |")
