"""The soak with faults (bench/soak.py) at CI size: 1,500 requests from 64 clients through two ``gesso serve``
replicas on one PostgreSQL database, the emulator (its own process) throttling 30%, failing 5% with a 500 and
timing out 1%, and replica 0 SIGKILLed at 40% of the run (a replacement joins). About 20 s on 2 cores. Run with
``-s`` to see the figures; the larger setting is ``python bench/soak.py --requests 20000 --seconds 600``."""

from __future__ import annotations

import pytest

from helpers import bench_module


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_soak_with_faults_and_a_replica_killed(database_url, tmp_path):
    soak = bench_module("soak")
    settings = soak.Settings(requests=1500, clients=64, seconds=90, database_url=database_url, workdir=tmp_path)
    result = soak.run(settings)
    print("\n" + soak.render(result))
    assert result["problems"] == [], soak.render(result)
    assert result["finished"] == result["requests"] == 1500
    # each fault fired, at about its rate of what reached the emulator
    fired, reached = result["emulator"]["faults_fired"], result["emulator"]["requests"]
    assert set(fired) == {"latency", "timeout", "error", "throttle"} and all(fired.values())
    assert 0.25 < fired["throttle"] / reached < 0.35 and 0.03 < fired["error"] / reached < 0.07
    # most requests succeed (the proxy retries and fails over); the tight key ran out of budget without overspending
    assert result["succeeded"] > 900  # about 1,100: 375 of the tight key's 500 are refused for budget
    tight = result["keys"]["soak-tight"]
    assert tight["budget_exceeded"] > 0 and tight["spend"] + tight["reserved"] <= tight["max_budget"] + 1e-9
    # the kill happened mid-run and cut requests off; every answered one kept its spend row
    replicas = result["replicas"]
    assert replicas["replica-0"]["killed"] and replicas["replica-0"]["answered"] > 0
    assert result["cut_off_by_kill"] > 0 and result["resent_after_kill"] == result["cut_off_by_kill"]
    assert result["spend_rows"] == result["answered"] + result["rows_without_answer"]
    assert 0 <= result["rows_without_answer"] <= result["cut_off_by_kill"]
    for name, figures in replicas.items():
        assert figures["growth_mb"] is not None and figures["growth_mb"] < settings.max_rss_growth_mb, name
