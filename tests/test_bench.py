"""`hsbulk bench`: synthetic records through the import, measured; bench.json and charts."""

import importlib.util
import json
import sys

from engine import bench
from engine.bench import SendLog, quota_figures
from engine.cli import main
from engine.config import Rate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("records_per_s", "calls_per_s", "api_calls", "http_429", "retries",
           "client_cpu_s", "cpu_us_per_record", "latency_ms", "quota")


def read_report(out):
    return json.loads((out / "bench.json").read_text())


def test_bench_against_the_sandbox_process_reports_every_figure(tmp_path, capsys,
                                                                monkeypatch):
    labels = []
    save = bench._save

    def labelled_save(fig, path):
        labels.append([(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes])
        save(fig, path)

    monkeypatch.setattr(bench, "_save", labelled_save)
    out = tmp_path / "out"
    assert main(["bench", "--target", "sandbox", "--records", "3000", "--rate", "20/1s",
                 "--out", str(out)]) == 0
    report = read_report(out)
    phase = report["import"]
    assert phase["rows"] == phase["created"] == 3000
    for name in FIGURES:
        assert name in phase, name
    assert phase["records_per_s"] > 0 and phase["api_calls"] >= 30
    assert set(phase["latency_ms"]) >= {"p50", "p95", "p99"}
    assert 0 < phase["latency_ms"]["p50"] <= phase["latency_ms"]["p99"]
    assert report["peak_rss_mb"] > 0
    # the window as the client sent and as the server counted: never above the limit
    assert phase["quota"]["limit"] == 20 and phase["quota"]["window_s"] == 1.0
    assert 0 < phase["quota"]["max_in_any_window"] <= 20
    assert 0 < phase["quota"]["mean_share"] <= 1.0
    assert report["server"]["max_accepted_in_any_window"] <= 20
    assert report["server"]["http_429"] == 0 and phase["http_429"] == 0
    shown = capsys.readouterr()
    assert "records/s" in shown.out and "p50/p95/p99" in shown.out
    if importlib.util.find_spec("matplotlib") is None:  # the CI's '.[dev]': the hint
        assert "pip install 'hsbulk[charts]'" in shown.err
        assert report["charts"] == [] and not list(out.glob("*.png"))
        return
    assert sorted(report["charts"]) == ["latency.png", "throughput.png", "window.png"]
    for name in report["charts"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert len(labels) == 3
    for axes in labels:
        xlabel, _, title = axes[0]
        assert xlabel and title and all(y for _, y, _ in axes)  # a twin axis: its own y


def test_without_matplotlib_bench_writes_the_json_and_a_hint(tmp_path, capsys, monkeypatch,
                                                             sandbox_env):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    sandbox = sandbox_env(rate_requests=None)
    out = tmp_path / "out"
    assert main(["bench", "--target", sandbox.base_url, "--yes-write-to-this-portal",
                 "--records", "400", "--rate", "none", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hsbulk: charts need matplotlib: pip install 'hsbulk[charts]' "
                   "(bench.json was written without them)"]
    report = read_report(out)
    assert report["import"]["created"] == 400 and report["charts"] == []
    assert not list(out.glob("*.png"))


def test_bench_refuses_a_portal_without_the_write_flag(tmp_path, capsys, sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    code = main(["bench", "--target", sandbox.base_url, "--records", "100",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("hsbulk: error: ") and "--yes-write-to-this-portal" in err
    assert len(err.strip().splitlines()) == 1
    assert sandbox.audit()["requests"] == 0
    assert not (tmp_path / "out").exists()


def test_bench_on_a_portal_archives_what_it_created_unless_kept(sandbox_env):
    sandbox = sandbox_env(rate_requests=None)
    flags = ["bench", "--target", sandbox.base_url, "--yes-write-to-this-portal",
             "--records", "250", "--rate", "none", "--quiet"]
    assert main(flags) == 0
    assert sandbox.audit()["records"]["contacts"] == {"typeId": "0-1", "live": 0,
                                                      "archived": 250}
    assert main([*flags, "--keep"]) == 0
    assert sandbox.audit()["records"]["contacts"]["live"] == 250


def test_bench_export_reads_every_record_back(tmp_path, sandbox_env):
    sandbox = sandbox_env(rate_requests=None, search_rate_per_s=None)
    out = tmp_path / "out"
    assert main(["bench", "--target", sandbox.base_url, "--yes-write-to-this-portal",
                 "--records", "600", "--rate", "none", "--export", "--keep", "--quiet",
                 "--out", str(out)]) == 0
    report = read_report(out)
    assert report["export"]["records"] == 600
    for name in FIGURES:
        assert name in report["export"], name


def test_quota_share_counts_the_steady_part_against_the_limit():
    log = SendLog()
    gap_s = 10 / 190 + 1e-9  # just under 19 a second for 20 s: 190 in every 10 s
    for i in range(380):
        log.record(i * gap_s, i * gap_s + 0.1, 200, False)
    figures = quota_figures(log.sent, Rate(190, 10.0))
    assert figures["max_in_any_window"] == 190
    assert 0.99 <= figures["mean_share"] <= 1.0
    assert figures["steady_s"] > 9


def test_steady_share_reads_a_burst_pattern_at_its_true_rate():
    """A limiter that keeps the first window's burst sends 190 every 10.15 s (a window
    after each answer, 150 ms later): 98.52% of 190/10s in the long run. The mean of the
    rolling counts from one window after the first send to the last reads it lower, as
    its span holds one lull more than it holds bursts; `steady_share` does not."""
    period, burst_gap = 10.15, 0.008
    sent = [k * period + i * burst_gap for k in range(8) for i in range(190)][:1_500]
    figures = quota_figures(sent, Rate(190, 10.0))
    assert figures["max_in_any_window"] == 190
    assert abs(figures["steady_share"] - 10 / period) < 1e-4
    assert figures["mean_share"] < figures["steady_share"] - 0.0015  # 98.33% here


def test_steady_share_agrees_with_the_rolling_counts_for_even_sends():
    gap = 10 / 190 * 1.02  # 98.04% of the rate, evenly spaced
    figures = quota_figures([i * gap for i in range(1_500)], Rate(190, 10.0))
    assert abs(figures["steady_share"] - 1 / 1.02) < 1e-4
    assert abs(figures["mean_share"] - figures["steady_share"]) < 0.002
