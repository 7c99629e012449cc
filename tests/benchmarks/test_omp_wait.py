"""benchmarks.omp_wait runs each setting in its own process, with that setting's environment alone."""

from __future__ import annotations

from benchmarks.omp_wait import WAIT_VARIABLES, forward_ms


def test_a_setting_runs_the_forward_pass_in_a_fresh_process_with_its_environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the caller's own setting must not leak into every run
    seen: dict = {}

    def run(cmd, env, **kwargs):
        seen.update(cmd=cmd, env={k: env.get(k) for k in WAIT_VARIABLES})
        return real_run(cmd, env=env, **kwargs)

    import benchmarks.omp_wait as omp_wait

    real_run = omp_wait.subprocess.run
    monkeypatch.setattr(omp_wait.subprocess, "run", run)
    assert forward_ms(tiny_model_dir, 2, {"GOMP_SPINCOUNT": "1000"}) > 0
    assert seen["env"] == {"GOMP_SPINCOUNT": "1000", "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None}
    assert seen["cmd"][1:3] == ["-m", "benchmarks.model_speed"]
