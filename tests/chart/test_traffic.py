"""How traffic reaches the API: the Service, the Ingress's streaming settings, the HTTPRoute, NetworkPolicies."""

from __future__ import annotations

import re

import yaml

from tests.chart.conftest import CHART, CI_VALUES, Helm, Manifests, container, env_of

NGINX = "nginx.ingress.kubernetes.io/"
MONITORING_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
INGRESS_TLS = CI_VALUES / "ingress-tls-values.yaml"
HTTPROUTE = CI_VALUES / "httproute-values.yaml"


def seconds(duration: str) -> float:
    """A Gateway API duration (`1h30m`, `600s`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"([0-9]+)(ms|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def graceful_timeout_s(manifests: Manifests) -> int:
    return int(env_of(container(manifests.get("Deployment", "api")))["GRACEFUL_TIMEOUT_S"])


def test_service_selects_the_api_pods_on_the_http_and_metrics_ports(default_render: Manifests) -> None:
    service = default_render.get("Service", "api")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"},
    ]


class TestMetricsPort:
    """`/metrics` on its own port (METRICS_PORT): scraped through the Service, never routed from outside."""

    def test_the_container_port_is_the_configured_one(self, helm: Helm) -> None:
        manifests = helm.template(values={"metrics": {"port": 9100}})
        assert manifests.get("ConfigMap")["data"]["METRICS_PORT"] == "9100"
        for component in ("api", "worker"):
            ports = {
                port["name"]: port["containerPort"]
                for port in container(manifests.get("Deployment", component))["ports"]
            }
            assert ports["metrics"] == 9100, component
        service_ports = {port["name"]: port for port in manifests.get("Service", "api")["spec"]["ports"]}
        assert service_ports["metrics"]["port"] == 9100
        assert service_ports["metrics"]["targetPort"] == "metrics"

    def test_the_service_monitor_scrapes_the_metrics_port(self, full_render: Manifests) -> None:
        (endpoint,) = full_render.get("ServiceMonitor")["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        for component in ("api", "worker"):
            names = [port["name"] for port in full_render.get("Service", component)["spec"]["ports"]]
            assert "metrics" in names, component

    def test_the_ingress_and_the_route_never_reach_it(self, full_render: Manifests) -> None:
        ingress = full_render.get("Ingress")
        backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
        assert backends
        assert all(backend["port"] == {"name": "http"} for backend in backends)
        route = full_render.get("HTTPRoute")
        refs = [ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]
        assert refs
        assert all(ref["port"] == 8000 for ref in refs)
        metrics_port = 9464
        assert all(ref["port"] != metrics_port for ref in refs)

    def test_no_metrics_port_when_metrics_are_off(self, helm: Helm) -> None:
        manifests = helm.template(values={"metrics": {"enabled": False}})
        names = [port["name"] for port in manifests.get("Service", "api")["spec"]["ports"]]
        assert names == ["http"]
        assert manifests.find("Service", "worker") is None


def test_forwarded_allow_ips_default_to_the_loopback(default_render: Manifests, helm: Helm) -> None:
    assert default_render.get("ConfigMap")["data"]["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    cidrs = helm.template(values={"config": {"forwardedAllowIps": ["10.244.0.0/16", "10.245.0.0/16"]}})
    assert cidrs.get("ConfigMap")["data"]["FORWARDED_ALLOW_IPS"] == "10.244.0.0/16,10.245.0.0/16"


class TestIngress:
    def test_no_ingress_by_default(self, default_render: Manifests) -> None:
        assert default_render.all("Ingress") == []

    def test_streams_through_ingress_nginx(self, helm: Helm) -> None:
        manifests = helm.template([INGRESS_TLS])
        annotations = manifests.get("Ingress")["metadata"]["annotations"]
        assert annotations[NGINX + "proxy-buffering"] == "off"
        assert annotations[NGINX + "proxy-request-buffering"] == "off"
        assert annotations[NGINX + "proxy-http-version"] == "1.1"
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(annotations[NGINX + timeout]) >= graceful_timeout_s(manifests), timeout

    def test_body_limit_admits_the_largest_request(self, helm: Helm) -> None:
        manifests = helm.template([INGRESS_TLS])
        limit = manifests.get("Ingress")["metadata"]["annotations"][NGINX + "proxy-body-size"]
        number, unit = re.fullmatch(r"([0-9]+)([kmg]?)", limit.lower()).groups()  # type: ignore[union-attr]
        limit_bytes = int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
        data = manifests.get("ConfigMap")["data"]
        assert limit_bytes >= max(int(data["MAX_BODY_BYTES"]), int(data["FILES_MAX_BYTES"]))

    def test_tls_and_rules(self, helm: Helm) -> None:
        manifests = helm.template([INGRESS_TLS])
        spec = manifests.get("Ingress")["spec"]
        assert spec["ingressClassName"] == "nginx"
        assert spec["tls"] == [{"secretName": "llm-example-com-tls", "hosts": ["llm.example.com"]}]
        (rule,) = spec["rules"]
        assert rule["host"] == "llm.example.com"
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": manifests.get("Service", "api")["metadata"]["name"], "port": {"name": "http"}}

    def test_annotations_are_values_a_user_can_drop(self, helm: Helm) -> None:
        values = {"ingress": {"enabled": True, "annotations": {NGINX + "proxy-body-size": None, "x/y": "z"}}}
        annotations = helm.template(values=values).get("Ingress")["metadata"]["annotations"]
        assert NGINX + "proxy-body-size" not in annotations
        assert annotations["x/y"] == "z"
        assert annotations[NGINX + "proxy-buffering"] == "off"

    def test_streaming_annotations_are_documented_where_they_are_set(self) -> None:
        text = (CHART / "values.yaml").read_text()
        block = text[text.index("\ningress:") : text.index("\nhttpRoute:")]
        for annotation in ("proxy-buffering", "proxy-request-buffering", "proxy-read-timeout", "proxy-body-size"):
            line = next(line for line in block.splitlines() if annotation + ":" in line)
            previous = block.splitlines()[block.splitlines().index(line) - 1].strip()
            assert previous.startswith("#") or "proxy-send-timeout" in line, f"no reason beside {annotation}"
        assert yaml.safe_load(text)["ingress"]["enabled"] is False


class TestHttpRoute:
    def test_routes_to_the_api_with_stream_timeouts(self, helm: Helm) -> None:
        manifests = helm.template([HTTPROUTE])
        route = manifests.get("HTTPRoute")
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"] == [
            {"name": "public", "namespace": "gateway-system", "sectionName": "https"}
        ]
        (rule,) = route["spec"]["rules"]
        assert rule["backendRefs"] == [{"name": manifests.get("Service", "api")["metadata"]["name"], "port": 8000}]
        timeouts = rule["timeouts"]
        assert seconds(timeouts["request"]) >= graceful_timeout_s(manifests)
        # The Gateway API's own rule: one backend try can not outlast the whole request.
        assert seconds(timeouts["backendRequest"]) <= seconds(timeouts["request"])
        assert manifests.all("Ingress") == []


class TestNetworkPolicy:
    def test_api_takes_only_its_port(self, default_render: Manifests) -> None:
        policy = default_render.get("NetworkPolicy", "api")
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        app, metrics = policy["spec"]["ingress"]
        assert app["ports"] == [{"port": "http", "protocol": "TCP"}]
        assert "from" not in app  # allowExternal: any client may reach the port
        assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        # The metrics port, whatever allowExternal says, only from the monitoring namespace.
        assert metrics["from"] == [MONITORING_PEER]

    def test_the_monitoring_namespace_is_a_value(self, helm: Helm) -> None:
        selector = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
        pods = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
        values = {"networkPolicy": {"metrics": {"namespaceSelector": selector, "podSelector": pods}}}
        manifests = helm.template(values=values)
        for component in ("api", "worker"):
            rules = manifests.get("NetworkPolicy", component)["spec"]["ingress"]
            (metrics,) = [rule for rule in rules if rule["ports"][0]["port"] == "metrics"]
            assert metrics["from"] == [{"namespaceSelector": selector, "podSelector": pods}], component

    def test_internal_redis_answers_only_the_gateway(self, default_render: Manifests) -> None:
        policy = default_render.get("NetworkPolicy", "redis")
        (rule,) = policy["spec"]["ingress"]
        components = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}
        assert components == {"api", "worker"}

    def test_closed_api_admits_listed_peers_scrapers_and_the_test_pod(self, helm: Helm) -> None:
        manifests = helm.template([CI_VALUES / "simulator-values.yaml"])
        app, metrics = manifests.get("NetworkPolicy", "api")["spec"]["ingress"]
        peers = app["from"]
        selectors = [peer.get("podSelector", {}).get("matchLabels", {}) for peer in peers]
        assert any(labels.get("app.kubernetes.io/component") == "test" for labels in selectors)
        namespaces = [peer["namespaceSelector"]["matchLabels"] for peer in peers if "namespaceSelector" in peer]
        assert namespaces == [{"kubernetes.io/metadata.name": "ingress-nginx"}]
        assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in metrics["from"]

    def test_worker_takes_only_metrics_scrapes(self, default_render: Manifests, helm: Helm) -> None:
        (rule,) = default_render.get("NetworkPolicy", "worker")["spec"]["ingress"]
        assert rule == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [MONITORING_PEER]}
        extra = {"podSelector": {"matchLabels": {"app": "vmagent"}}}
        scraped = helm.template(values={"networkPolicy": {"metricsFrom": [extra]}})
        (rule,) = scraped.get("NetworkPolicy", "worker")["spec"]["ingress"]
        assert rule["from"] == [MONITORING_PEER, extra]
        unscraped = helm.template(values={"metrics": {"enabled": False}})
        assert unscraped.get("NetworkPolicy", "worker")["spec"]["ingress"] == []

    def test_restricted_egress_allows_dns_https_and_the_chart_services(self, full_render: Manifests) -> None:
        policy = full_render.get("NetworkPolicy", "api")
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        rules = policy["spec"]["egress"]
        ports = [port["port"] for rule in rules for port in rule.get("ports", [])]
        assert 53 in ports
        assert 443 in ports
        targets = [
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in rules
            for peer in rule.get("to", [])
            if "podSelector" in peer
        ]
        assert "simulator" in targets
