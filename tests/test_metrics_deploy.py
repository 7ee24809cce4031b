"""deploy/: Prometheus config and rules through promtool, the Grafana dashboard against a live /metrics page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from conftest import CHANNEL_OPTIONS, REPO, picture, raw_image, register
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import free_port, scrape_text, stream

from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stylecast.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",), "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "unknown": ("",)}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (make test installs Debian's prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_checks_config_and_rules():
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", *sorted(
            str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml")))):
        proc = promtool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rule_tests_fire_and_stay_quiet_for_every_alert():
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "tests" / "rules_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == alerts and quiet == alerts, f"every alert needs a firing and a quiet case: {alerts}"
    proc = promtool("test", "rules", "tests/rules_test.yml")
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)              # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                          # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                         # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[m.end():].lstrip()
        if m.group() not in PROMQL_WORDS and not following.startswith("(") and not expr[:m.start()].endswith("$"):
            names.add(m.group())
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, nested row panels included."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    panels += [p for row in panels for p in row.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "recording.yml").read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def test_metric_names_parser():
    expr = ('sum by (backend, le) (rate(stylecast_frame_latency_seconds_bucket{stage="total", job=~"$job"}'
            '[$__rate_interval])) / on (job) group_left () stylecast:frames:rate1m > bool 0.5')
    assert metric_names(expr) == {"stylecast_frame_latency_seconds_bucket", "stylecast:frames:rate1m"}


async def test_every_dashboard_query_reads_metrics_on_a_live_page(server_factory):
    server = await server_factory(metrics_port=free_port())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        style = await register(stub, picture(64, 64, seed=1))
        await stream(stub, style.id, [raw_image(picture(48, 32, seed=i)) for i in range(3)])
    page = await scrape_text(server.metrics_endpoint.port)
    exported = {fam.name + suffix for fam in text_string_to_metric_families(page) for suffix in SUFFIXES[fam.type]}
    rules = recording_rules()
    for record, expr in rules.items():
        missing = metric_names(expr) - exported - set(rules)
        assert not missing, f"recording rule {record} reads metrics not on /metrics: {missing}"
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        missing = names - exported - set(rules)
        assert not missing, f"panel {title!r} queries metrics that do not exist: {missing}"


def test_dashboard_and_provisioning_are_consistent():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            for t in p["targets"]:
                used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
                assert used <= variables, f"{p['title']}: unknown variables {used - variables}"
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/stylecast.yml").read_text())
    mount = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "compose/docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{mount}:ro" in volumes
    assert set(compose["services"]) == {"stylecast", "prometheus", "grafana"}
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    target = scrape["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] == "stylecast" and "--metrics-port" in compose["services"]["stylecast"]["command"]
    port = compose["services"]["stylecast"]["command"][compose["services"]["stylecast"]["command"].index(
        "--metrics-port") + 1]
    assert target == f"stylecast:{port}"
    assert all(Path(PROMETHEUS / f).is_file() for f in scrape["rule_files"])
